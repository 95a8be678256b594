"""Print the construction-stack table (resources, timings, checking speed) from saved certificates.

    .venv/bin/algeval prove --all --dtype both        # writes proofs/certificates/*.json
    .venv/bin/python benchmarks/certificate_table.py  # prints the markdown table quoted in README
"""

import json
import sys
from pathlib import Path

d = Path(sys.argv[1] if len(sys.argv) > 1 else "proofs/certificates")
rows = []
for p in sorted(d.glob("*.json")):
    c = json.loads(p.read_text())
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
