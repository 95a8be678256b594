"""Print the certificate tables quoted in README from saved certificates.

    .venv/bin/algeval prove --all --dtype both        # writes proofs/certificates/*.json
    .venv/bin/python benchmarks/certificate_table.py  # prints the markdown tables

Three tables: library programs (resources, timings, checking speed), hand-built constructions
(search, value path, k-hop, DFS chain of thought), and the smallest passing inverse temperatures.
"""

import json
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else "proofs/certificates")
certs = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]

rows = []
for c in certs:
    if "program" not in c:
        continue
    r = {k: v["built"] for k, v in c["resources"].items()}
    rows.append((c["program"], c["claim"], c["dtype"], c["method"], c["checked"], c["passed"], r["layers"], r["heads"],
                 r["d_model"], r["d_mlp"], c["seconds"]["compile"], c["seconds"]["check"], c["inputs_per_second"],
                 c["min_decoding_margin"], max([h["worst_leak_measured"] for h in c["heads"]] + [0.0])))
print("| claim | dtype | method | inputs | result | layers | heads | d_model | d_mlp | compile s | check s "
      "| inputs/s | min margin | worst leak |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows):
    print(f"| {r[1]} | {r[2]} | {r[3]} | {r[4]:,} | {'pass' if r[5] else 'FAIL'} | {r[6]} | {r[7]} | {r[8]} | {r[9]} "
          f"| {r[10]:.2f} | {r[11]:.1f} | {r[12]:,.0f} | {r[13]:.3g} | {r[14]:.2g} |")

print()
print("| claim | method | inputs | result | layers (formula) | d_model | d_mlp | min margin | inputs/s |")
print("|---|---|---|---|---|---|---|---|---|")
for c in certs:
    if "program" in c or "rows" in c or "resources" not in c:
        continue
    res = c["resources"]
    rate = c.get("graphs_per_second", c.get("inputs_per_second"))
    print(f"| {c['claim']} | {c['method']} | {c['checked']:,} | {'pass' if c['passed'] else 'FAIL'} "
          f"| {res['layers']['built']} (`{res['layers']['formula']}`) | {res['d_model']['built']} "
          f"| {res['d_mlp']['built']} | {c['min_decoding_margin']:.3g} | {rate:,.0f} |")

print()
print("| claim | smallest passing scale on the derived betas | derived / smallest |")
print("|---|---|---|")
for c in certs:
    for r in c.get("rows", []):
        s = r["smallest_passing_scale"]
        print(f"| {r['claim']} | {s:.3g} | {1 / s:.2f}x |")
