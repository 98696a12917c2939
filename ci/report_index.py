"""Write reports/index.html: one page linking every report's HTML, showing its plots and headline numbers."""
import html
import json
import sys
from pathlib import Path


def _headline(name: str, data: dict) -> str:
    "A short summary of a report's JSON (its leaderboard or top-level scalars)."
    if "leaderboard" in data:
        rows = "".join(f"<tr><td>{html.escape(r['model'])}</td>" + "".join(f"<td>{v:.4f}</td>" for k, v in r.items() if k != "model") + "</tr>"
                       for r in data["leaderboard"])
        head = "".join(f"<th>{html.escape(k)}</th>" for k in data["leaderboard"][0]) if data["leaderboard"] else ""
        return f"<table><tr>{head}</tr>{rows}</table>"
    scalars = {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and len(str(v)) < 80}
    return "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in scalars.items()) + "</table>"


def main(root: str) -> None:
    root = Path(root)
    parts = ["<html><head><meta charset='utf-8'><title>musicml reports</title><style>body{font-family:sans-serif;margin:2em}"
             "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}td,th{padding:2px 8px;text-align:right}</style></head>"
             "<body><h1>musicml benchmark reports</h1>"]
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        parts.append(f"<h2>{html.escape(d.name)}</h2>")
        for h in sorted(d.glob("*.html")):
            parts.append(f"<p><a href='{d.name}/{h.name}'>full report ({h.name})</a></p>")
        for j in sorted(d.glob("*.json")):
            try:
                parts.append(_headline(d.name, json.loads(j.read_text())))
            except (ValueError, KeyError, TypeError) as e:
                parts.append(f"<p>could not summarise {j.name}: {html.escape(str(e))}</p>")
        for img in sorted(d.glob("*.png")):
            parts.append(f"<div><img src='{d.name}/{img.name}' alt='{img.name}'></div>")
    parts.append("</body></html>")
    (root / "index.html").write_text("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reports")
