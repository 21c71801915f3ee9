"""Where every bench writes its results: results/bench/<name>.json (raw) and <name>.md (a table)."""
import json
import os


def write_report(out_dir, name, data, table_lines):
    """Write the raw data and the markdown table, and print the table."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(table_lines) + "\n")
    print("\n".join(table_lines))
