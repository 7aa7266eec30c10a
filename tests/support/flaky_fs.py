"""A passthrough FUSE filesystem that a test can turn read-only or slow
while files on it are open, as a disk does under a running daemon (Linux
refuses `mount -o remount,ro` while any file is open for writing).

    python3 flaky_fs.py BACKING_DIR MOUNTPOINT CONTROL_DIR

While CONTROL_DIR/read-only exists, every write, sync and change of the
tree fails with EROFS. CONTROL_DIR/sync-delay-ms, if present, holds a
number of milliseconds each fsync waits first: a disk slow to make data
durable (writes land in the page cache, as on a real disk). Runs in the
foreground until unmounted.
"""

import errno
import os
import sys
import time

from mfusepy import FUSE, FuseOSError, Operations


class Flaky(Operations):
    use_ns = True

    def __init__(self, root, control):
        # libfuse leaves the working directory: absolute paths only.
        self.root = os.path.abspath(root)
        control = os.path.abspath(control)
        self.read_only = os.path.join(control, "read-only")
        self.delay = os.path.join(control, "sync-delay-ms")

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _writable(self):
        """Fails like a read-only filesystem."""
        if os.path.exists(self.read_only):
            raise FuseOSError(errno.EROFS)

    def _slow(self):
        """Waits like a slow disk."""
        try:
            with open(self.delay) as f:
                time.sleep(int(f.read().strip() or 0) / 1000)
        except FileNotFoundError:
            pass

    # Reading.
    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path)) if fh is None else os.fstat(fh)
        return {
            key: getattr(st, key)
            for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime", "st_mtime", "st_ctime", "st_ino",
            )
        }

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise FuseOSError(errno.EACCES)

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax",
            )
        }

    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writable()
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)

    def flush(self, path, fh):
        return 0

    # Writing.
    def create(self, path, mode, fi=None):
        self._writable()
        return os.open(self._path(path), os.O_RDWR | os.O_CREAT, mode)

    def write(self, path, data, offset, fh):
        self._writable()
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._writable()
        if fh is None:
            os.truncate(self._path(path), length)
        else:
            os.ftruncate(fh, length)

    def fsync(self, path, datasync, fh):
        self._writable()
        self._slow()
        os.fdatasync(fh) if datasync else os.fsync(fh)

    def unlink(self, path):
        self._writable()
        os.unlink(self._path(path))

    def rename(self, old, new):
        self._writable()
        os.rename(self._path(old), self._path(new))

    def mkdir(self, path, mode):
        self._writable()
        os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        self._writable()
        os.rmdir(self._path(path))

    def chmod(self, path, mode):
        self._writable()
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        self._writable()
        os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        self._writable()
        os.utime(self._path(path), ns=times)


if __name__ == "__main__":
    backing, mountpoint, control = sys.argv[1:4]
    FUSE(Flaky(backing, control), mountpoint, foreground=True, nothreads=False)
