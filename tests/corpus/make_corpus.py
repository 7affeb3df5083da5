"""Writes the CloudFront log corpus the fidelity tests read. Deterministic (gzip mtime 0), so
re-running it leaves `git status` clean. Run: python3 tests/corpus/make_corpus.py"""

import gzip
import io
import os

HERE = os.path.dirname(os.path.abspath(__file__))

FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
    "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id "
    "x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher "
    "x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields c-port "
    "time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len "
    "sc-range-start sc-range-end"
).split()

# Line 1: today's shapes, double-encoded header values. Line 2: the day before, IPv6,
# status 000, single-encoded User-Agent, a byte range, a cookie.
LINE1 = [
    "2026-01-10", "10:15:21", "ICN1", "512", "203.0.113.10", "GET", "d111111abcdef8.cloudfront.net",
    "/live/a%2520b.m3u8", "200", "https://www.example.com/?q=a%2520b",
    "Mozilla/5.0%2520(Windows%2520NT%252010.0)", "channel_id=1001&name=caf%25C3%25A9", "-", "Hit",
    "AbCdEf1234567890==", "www.example.com", "https", "34", "0.002", "-", "TLSv1.2",
    "ECDHE-RSA-AES128-GCM-SHA256", "Hit", "HTTP/2.0", "-", "-", "50432", "0.001", "Hit",
    "application/vnd.apple.mpegurl", "512", "-", "-",
]
LINE2 = [
    "2026-01-09", "23:59:59", "SEA19-C1", "1048576", "2001:db8::8a2e:370:7334", "GET",
    "d111111abcdef8.cloudfront.net", "/video.mp4", "000", "-", "curl/8.5.0%20(x86_64)", "-",
    "session=abc", "Error", "XyZ0987654321==", "www.example.com", "http", "120", "10.123",
    "198.51.100.7", "-", "-", "Error", "HTTP/1.1", "-", "-", "443", "9.999", "ClientCommError",
    "video/mp4", "1048576", "0", "1023",
]

HEADER = "#Version: 1.0\n#Fields: {}\n"


def lines(n, rows, end="\n", trailing_tab=False):
    text = HEADER.format(" ".join(FIELDS[:n]))
    for row in rows:
        text += "\t".join(row[:n]) + ("\t" if trailing_tab else "") + end
    return text.encode()


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(data)
    return out.getvalue()


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


good = lines(33, [LINE1, LINE2])
# One file per published header version: the same two requests, as each version logged them.
for n in (12, 18, 19, 24, 26, 33):
    write(f"header-{n:02d}.log.gz", gz(lines(n, [LINE1, LINE2])))
# A future version with two fields this cf2bq does not know.
future = HEADER.format(" ".join(FIELDS + ["c-country", "asn"]))
future += "\t".join(LINE1 + ["JP", "2516"]) + "\n" + "\t".join(LINE2 + ["-", "-"]) + "\n"
write("header-35-future.log.gz", gz(future.encode()))
# Two files concatenated: the second #Fields line switches the mapping.
write("two-headers.log.gz", gz(lines(26, [LINE1]) + lines(33, [LINE2])))
# Windows line ends and a trailing TAB on every line.
write("crlf-trailing-tab.log.gz", gz(lines(33, [LINE1, LINE2], end="\r\n", trailing_tab=True)))
# Two gzip members (as `cat a.gz b.gz` makes).
write("multi-member.log.gz", gz(lines(33, [LINE1])) + gz(lines(33, [LINE2])))

# Bad lines: a good line, the bad one, a good line. Only the bad one is quarantined.
def bad(name, bad_line):
    text = lines(33, [LINE1]) + bad_line + b"\n" + "\t".join(LINE2).encode() + b"\n"
    write(f"bad-{name}.log.gz", gz(text))


bad("column-count", "\t".join(LINE1[:20]).encode())
bad("number", "\t".join(LINE1[:3] + ["12x"] + LINE1[4:]).encode())
bad("date", "\t".join(["2026-02-30"] + LINE1[1:]).encode())
bad("time", "\t".join(LINE1[:1] + ["24:00:00"] + LINE1[2:]).encode())
bad("utf8", "\t".join(LINE1[:7]).encode() + b"\t/caf\xe9" + ("\t" + "\t".join(LINE1[8:])).encode())
bad("too-long", "\t".join(LINE1[:7] + ["/" + "a" * 70000] + LINE1[8:]).encode())

# Whole-object failures.
write("not-gzip.log.gz", good)
compressed = gz(good)
write("truncated.log.gz", compressed[: len(compressed) // 2])
corrupt = bytearray(compressed)
for i in range(20, 40):
    corrupt[i] ^= 0x5A
write("corrupt.log.gz", bytes(corrupt))
write("no-fields-header.log.gz", gz(b"#Version: 1.0\n" + "\t".join(LINE1).encode() + b"\n"))
write("empty.log.gz", b"")
