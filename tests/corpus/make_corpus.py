"""Writes the CloudFront log corpus the fidelity tests read. Deterministic (gzip mtime 0), so
re-running it leaves `git status` clean. Run: .venv/bin/python tests/corpus/make_corpus.py
(the stack's venv has pyarrow, which writes the v2 Parquet file; plain python3 skips it)."""

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

# Standard logging v2 (tests/it/v2.rs): the same two requests as the legacy files above.
import json
import random

V2_EXTRA = ["timestamp(ms)", "c-country", "asn", "origin-fbl", "origin-lbl",
            "cache-behavior-path-pattern", "distribution-tenant-id", "connection-id"]
EXTRA1 = ["1768040121123", "JP", "2516", "0.012", "0.034", "/live/*", "dt_2abc", "conn-77"]
EXTRA2 = ["1768003199999", "-", "-", "-", "-", "-", "-", "-"]


def v2_w3c(fields, rows, delimiter="\t"):
    # v2 W3C: a #Fields line (space-separated), no #Version line.
    text = "#Fields: " + " ".join(fields) + "\n"
    for row in rows:
        text += delimiter.join(row) + "\n"
    return text.encode()


def project(fields, line, extra):
    values = dict(zip(FIELDS + V2_EXTRA, line + extra))
    return [values[f] for f in fields]


# All 33 legacy fields, shuffled (a positional parser would fail), TAB: loads to the same rows
# as header-33.log.gz.
order = list(FIELDS)
random.Random(14).shuffle(order)
write("v2-w3c-reordered.log.gz",
      gz(v2_w3c(order, [project(order, LINE1, EXTRA1), project(order, LINE2, EXTRA2)])))
# A subset without date and time, dated by timestamp(ms), with the new fields; comma-delimited.
subset = ["c-ip", "timestamp(ms)", "sc-status", "cs-protocol", "cs-protocol-version",
          "x-edge-detailed-result-type"] + V2_EXTRA[1:]
new_values = {"cs-protocol": "grpcs", "cs-protocol-version": "HTTP/3.0",
              "x-edge-detailed-result-type": "LambdaExecutionError"}
sub1 = [new_values.get(f, v) for f, v in zip(subset, project(subset, LINE1, EXTRA1))]
write("v2-w3c-no-date-comma.log.gz",
      gz(v2_w3c(subset, [sub1, project(subset, LINE2, EXTRA2)], delimiter=",")))
# The same subset with date and time too, pipe-delimited.
with_date = ["time"] + subset + ["date"]
write("v2-w3c-pipe.log.gz",
      gz(v2_w3c(with_date, [[LINE1[1]] + sub1 + [LINE1[0]],
                            project(with_date, LINE2, EXTRA2)], delimiter="|")))


def v2_json(line, underscored):
    # JSON lines: hyphenated names and string values as the field list spells them, or
    # underscored names with numbers as numbers and `-` as null.
    out = {}
    for f, v in zip(FIELDS, line):
        if not underscored:
            out[f] = v
            continue
        name = f.replace("(", "_").replace(")", "").replace("-", "_").lower()
        if v == "-":
            out[name] = None
        elif f in ("sc-bytes", "sc-status", "cs-bytes", "c-port", "sc-content-len",
                   "sc-range-start", "sc-range-end", "fle-encrypted-fields"):
            out[name] = int(v)
        elif f in ("time-taken", "time-to-first-byte"):
            out[name] = float(v)
        else:
            out[name] = v
    return json.dumps(out, separators=(",", ":"))


for underscored in (False, True):
    name = "v2-json-underscored.log.gz" if underscored else "v2-json.log.gz"
    text = "".join(v2_json(line, underscored) + "\n" for line in (LINE1, LINE2))
    write(name, gz(text.encode()))


# v2 Parquet as AWS documents it (underscored, string-typed columns), written by pyarrow (the
# Arrow C++ writer): the same two requests, two row groups of one row each, Snappy.
try:
    import pyarrow
    import pyarrow.parquet
except ImportError:
    print("pyarrow not installed: v2-parquet.parquet left as it is")
else:
    names = [f.replace("(", "_").replace(")", "").replace("-", "_").lower()
             for f in FIELDS + V2_EXTRA]
    names[names.index("timestamp_ms")] = "timestamp_ms"
    rows = [LINE1 + EXTRA1, LINE2 + EXTRA2]
    table = pyarrow.table({n: pyarrow.array([None if r[i] == "-" else r[i] for r in rows],
                                            pyarrow.string())
                           for i, n in enumerate(names)})
    out = io.BytesIO()
    pyarrow.parquet.write_table(table, out, row_group_size=1, compression="snappy",
                                write_statistics=False)
    write("v2-parquet.parquet", out.getvalue())
