"""A NAS's RFC 5176 Dynamic Authorization server, played by pyrad.

Usage: coa_nas.py ADDRESS SECRET [--naks N] [--answer-unverified]

Listens on ADDRESS (port 0: any free one) for Disconnect- and CoA-Requests
from 127.0.0.0/8, prints `listen PORT`, then one JSON line per request it
handled: its code, attributes, and whether its Message-Authenticator
verified. It answers with an ACK, or a NAK with Error-Cause 506 (Resources
Unavailable) for the first N requests. pyrad drops requests whose Request
Authenticator does not verify with SECRET (silence); with
--answer-unverified it answers them anyway, with its own secret.
"""

import io
import json
import sys

from pyrad import packet, server
from pyrad.dictionary import Dictionary

DICTIONARY = """
ATTRIBUTE	User-Name		1	string
ATTRIBUTE	NAS-IP-Address		4	ipaddr
ATTRIBUTE	Framed-IP-Address	8	ipaddr
ATTRIBUTE	Filter-Id		11	string
ATTRIBUTE	Acct-Session-Id		44	string
ATTRIBUTE	Event-Timestamp		55	integer
ATTRIBUTE	Message-Authenticator	80	octets
ATTRIBUTE	Framed-IPv6-Prefix	97	ipv6prefix
ATTRIBUTE	Error-Cause		101	integer
"""

NAMES = {
    packet.DisconnectRequest: "Disconnect-Request",
    packet.CoARequest: "CoA-Request",
}


class Nas(server.Server):
    def __init__(self, naks, **kwargs):
        super().__init__(**kwargs)
        self.naks = naks

    def _answer(self, pkt):
        verified = pkt.VerifyCoARequest()
        authenticated = bool(pkt.message_authenticator) and verified and \
            pkt.verify_message_authenticator()
        attributes = {}
        for name in ("User-Name", "Acct-Session-Id", "Framed-IP-Address",
                     "NAS-IP-Address", "Event-Timestamp", "Filter-Id",
                     "Framed-IPv6-Prefix"):
            if name in pkt:
                attributes[name] = pkt[name][0]
        reply = self.CreateReplyPacket(pkt)
        nak = self.naks > 0
        if nak:
            self.naks -= 1
            reply.code = pkt.code + 2
            reply["Error-Cause"] = 506
        print(json.dumps({
            "code": NAMES.get(pkt.code, pkt.code),
            "attributes": attributes,
            "verified": verified,
            "message_authenticator": authenticated,
            "answer": "nak" if nak else "ack",
        }), flush=True)
        self.SendReplyPacket(pkt.fd, reply)

    HandleDisconnectPacket = _answer
    HandleCoaPacket = _answer


def main():
    address, secret = sys.argv[1], sys.argv[2].encode()
    naks = int(sys.argv[sys.argv.index("--naks") + 1]) if "--naks" in sys.argv else 0
    verify = "--answer-unverified" not in sys.argv
    dictionary = Dictionary(io.StringIO(DICTIONARY))
    hosts = {"127.0.0.1": server.RemoteHost("127.0.0.1", secret, "flowtally")}
    nas = Nas(naks, dict=dictionary, hosts=hosts, coaport=0, auth_enabled=False,
              acct_enabled=False, coa_enabled=True, enable_pkt_verify=verify)
    nas.BindToAddress(address)
    print("listen %d" % nas.coafds[0].getsockname()[1], flush=True)
    nas.Run()


if __name__ == "__main__":
    main()
