//! The XDP program's time instruction by instruction, for
//! `FLOWTALLY_PROFILE` (BENCHMARKS.md, where the time goes). `perf record`
//! samples every CPU while one export runs through the program over and
//! over. Each sample's address is counted against the program's JIT
//! images, which are read with BPF_OBJ_GET_INFO_BY_FD because this
//! machine's bpftool has no disassembler and it has no /proc/kcore. Then
//! `objdump` disassembles the images. Needs `perf` (linux-perf) and
//! `objdump` (binutils).

use std::{
    collections::HashMap,
    fs, io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
};

/// One subprogram's JIT image.
pub struct Image {
    /// Its kernel symbol (`bpf_prog_<tag>_<function>`).
    pub name: String,
    pub addr: u64,
    pub code: Vec<u8>,
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Bytes of `struct bpf_prog_info` passed in: more than the fields below
/// need; the kernel checks that what it does not know is zero.
const INFO_LEN: usize = 256;
/// Offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h).
const JITED_PROG_LEN: usize = 16;
const JITED_PROG_INSNS: usize = 24;
const NR_JITED_KSYMS: usize = 104;
const NR_JITED_FUNC_LENS: usize = 108;
const JITED_KSYMS: usize = 112;
const JITED_FUNC_LENS: usize = 120;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `union bpf_attr` prefix of its length, which the
    // kernel reads (and writes) within that length only.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

/// Asks for the program's info with `info` as the buffer; the kernel fills
/// it and writes through the pointers it holds.
fn prog_info(fd: &OwnedFd, info: &mut [u8; INFO_LEN]) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(INFO_LEN as u32).to_ne_bytes());
    attr[8..].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// The JIT images of program `id`'s subprograms, named from /proc/kallsyms.
pub fn images(id: u32) -> io::Result<Vec<Image>> {
    let mut attr = [0u8; 12];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a new descriptor the kernel just gave us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u8; INFO_LEN];
    prog_info(&fd, &mut info)?;
    let len = u32_at(&info, JITED_PROG_LEN);
    let (ksyms, lens) = (
        u32_at(&info, NR_JITED_KSYMS),
        u32_at(&info, NR_JITED_FUNC_LENS),
    );
    let mut code = vec![0u8; len as usize];
    let mut addrs = vec![0u64; ksyms as usize];
    let mut sizes = vec![0u32; lens as usize];
    let mut info = [0u8; INFO_LEN];
    let mut put = |at: usize, bytes: &[u8]| info[at..at + bytes.len()].copy_from_slice(bytes);
    put(JITED_PROG_LEN, &len.to_ne_bytes());
    put(JITED_PROG_INSNS, &(code.as_mut_ptr() as u64).to_ne_bytes());
    put(NR_JITED_KSYMS, &ksyms.to_ne_bytes());
    put(NR_JITED_FUNC_LENS, &lens.to_ne_bytes());
    put(JITED_KSYMS, &(addrs.as_mut_ptr() as u64).to_ne_bytes());
    put(JITED_FUNC_LENS, &(sizes.as_mut_ptr() as u64).to_ne_bytes());
    prog_info(&fd, &mut info)?;

    let names: HashMap<u64, String> = fs::read_to_string("/proc/kallsyms")?
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
            let name = fields.nth(1)?;
            name.starts_with("bpf_prog_")
                .then(|| (addr, name.to_string()))
        })
        .collect();
    let mut start = 0;
    Ok(addrs
        .iter()
        .zip(&sizes)
        .map(|(&addr, &size)| {
            let end = start + size as usize;
            let image = Image {
                name: names
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| format!("{addr:x}")),
                addr,
                code: code[start..end].to_vec(),
            };
            start = end;
            image
        })
        .collect())
}

/// Starts `perf record` on every CPU for `seconds`, into `out`.
pub fn record(out: &Path, seconds: u32) -> io::Result<Child> {
    Command::new("perf")
        .args(["record", "-F", "20000", "-e", "cpu-clock", "-a", "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Prints each subprogram's share of the program's samples, then the
/// `top` instructions of each one that holds at least a twentieth.
pub fn report(images: &[Image], perf_data: &Path, dir: &Path, top: usize) -> io::Result<()> {
    let script = Command::new("perf")
        .args(["script", "-F", "ip", "-i"])
        .arg(perf_data)
        .stderr(Stdio::null())
        .output()?;
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for line in String::from_utf8_lossy(&script.stdout).lines() {
        if let Ok(ip) = u64::from_str_radix(line.trim(), 16) {
            *counts.entry(ip).or_default() += 1;
        }
    }
    let totals: Vec<u64> = images
        .iter()
        .map(|image| samples_in(&counts, image).iter().map(|(_, n)| n).sum())
        .collect();
    let all: u64 = totals.iter().sum::<u64>().max(1);
    println!("| subprogram | share of the program's samples |\n|---|---:|");
    for (image, total) in images.iter().zip(&totals) {
        println!("| {} | {:.1} % |", image.name, percent(*total, all));
    }
    for (image, &total) in images.iter().zip(&totals) {
        if total * 20 < all {
            continue;
        }
        let bin = dir.join(format!("{:x}.bin", image.addr));
        fs::write(&bin, &image.code)?;
        let listing = Command::new("objdump")
            .args(["-D", "-b", "binary", "-mi386:x86-64"])
            .arg(format!("--adjust-vma={:#x}", image.addr))
            .arg(&bin)
            .output()?;
        let text = String::from_utf8_lossy(&listing.stdout);
        let lines: HashMap<u64, &str> = text
            .lines()
            .filter_map(|line| {
                let (addr, _) = line.split_once(':')?;
                Some((u64::from_str_radix(addr.trim(), 16).ok()?, line))
            })
            .collect();
        let mut hot = samples_in(&counts, image);
        hot.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        println!("\n{} ({total} samples), hottest instructions:", image.name);
        for (ip, n) in hot.into_iter().take(top) {
            let line = lines.get(&ip).copied().unwrap_or("?");
            println!("{:5.1} %  {line}", percent(n, total));
        }
    }
    Ok(())
}

/// The sample counts by address that fall in `image`.
fn samples_in(counts: &HashMap<u64, u64>, image: &Image) -> Vec<(u64, u64)> {
    let end = image.addr + image.code.len() as u64;
    counts
        .iter()
        .filter(|&(&ip, _)| ip >= image.addr && ip < end)
        .map(|(&ip, &n)| (ip, n))
        .collect()
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}
