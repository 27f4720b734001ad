#!/usr/bin/env python3
"""The README's configuration table against `scan-server --help`, which prints the server's one
option table (server/app/config.cc): the same flags, each with the same environment variable, in
the same order, so the documentation cannot drift from the code. Also checks that the startup log
line (the "Defaults:" line of --help, ServerConfig::describe) shows every setting.

Usage: readme_config_test.py <scan-server> <README.md>
"""
import re
import subprocess
import sys


def help_options(server):
    text = subprocess.run([server, "--help"], check=True, capture_output=True, text=True).stdout
    options = re.findall(r"^  --([a-z0-9-]+)\s+env (SCAN_[A-Z0-9_]+)$", text, re.MULTILINE)
    defaults = re.search(r"^Defaults: (.*)$", text, re.MULTILINE)
    return options, (defaults.group(1) if defaults else "")


def readme_options(readme):
    text = open(readme, encoding="utf-8").read()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    options = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`--([a-z0-9-]+)`", cells[0])
        variables = re.findall(r"`(SCAN_[A-Z0-9_]+)`", cells[1])
        if len(flags) != len(variables):
            options.append((f"row {line!r}", "flags and variables do not pair up"))
            continue
        options.extend(zip(flags, variables))
    return options


def main(server, readme):
    options, defaults = help_options(server)
    failures = []
    if len(options) < 20:
        failures.append(f"--help lists only {len(options)} options: format changed?")
    documented = readme_options(readme)
    if documented != options:
        missing = [option for option in options if option not in documented]
        extra = [option for option in documented if option not in options]
        failures.append(f"README table differs from --help: missing {missing}, not in --help "
                        f"{extra}" if missing or extra else
                        "README table lists the options in another order than --help")
    shown = dict(item.split("=", 1) for item in defaults.split())
    for flag, _ in options:
        if flag.replace("-", "_") not in shown:
            failures.append(f"--{flag} is missing from the startup log line (describe())")
    for failure in failures:
        print(failure)
    print(f"readme_config: {len(options)} options, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
