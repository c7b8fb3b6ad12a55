"""What the comparison scripts (compare-llamacpp.sh, kl-llamacpp.sh) share
when they report: the machine's CPU name, and a result written as a
markdown page (the first head line its title, the others paragraphs, then
the table) and a JSON file beside it, the page also printed to stdout."""
import json
import platform
import subprocess
import sys
import time


def cpu_name():
    try:
        return next(l.split(":", 1)[1].strip() for l in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if l.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def utc_now():
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write(out, head, lines, data):
    """Prints head and the table lines; writes out.md and out.json (data)."""
    print("\n".join(head) + "\n\n" + "\n".join(lines) + "\n", end="")
    with open(out + ".md", "w") as f:
        f.write("# " + head[0] + "\n\n" + "\n\n".join(head[1:]) + "\n\n" + "\n".join(lines) + "\n")
    with open(out + ".json", "w") as f:
        json.dump(data, f, indent=1)
    print(f"written: {out}.md, {out}.json", file=sys.stderr)
