"""Write the dashboard of the reports under reports/ with `musicml.bench.dashboard`: index.html (headline table,
plots, environment, links) and summary.json (the same numbers); print the headline table."""
import sys

from musicml.bench.dashboard import build_dashboard, headline_text

if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "reports"
    s = build_dashboard(root)
    print(f"dashboard: {root}/index.html and {root}/summary.json (profile {s['profile']})")
    print(headline_text(s))
