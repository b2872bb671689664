"""Falco's own rules files load unchanged: stable alone, stable+incubating,
stable+incubating+sandbox.  One test per file asserts the exact set of rules
that file adds, disabled ones included (`rules validate --json` counts them in
``rules_loaded``).

Only the current files are tested: earlier releases' stable files are not in
shared/ and could not be reconstructed verifiably (see docs/FALCO.md).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from falco_files import INCUBATING, SANDBOX, STABLE, falco_files
from vigil.rules.engine import RuleEngine

VIGIL = str(Path(sys.executable).parent / "vigil")

STABLE_RULES = {
    "Directory traversal monitored file read", "Read sensitive file trusted after startup",
    "Read sensitive file untrusted", "Run shell untrusted", "System user interactive",
    "Terminal shell in container", "Contact K8S API Server From Container",
    "Netcat Remote Code Execution in Container", "Search Private Keys or Passwords",
    "Clear Log Activities", "Remove Bulk Data from Disk", "Create Symlink Over Sensitive Files",
    "Create Hardlink Over Sensitive Files", "Packet socket created in container",
    "Redirect STDOUT/STDIN to Network Connection in Container",
    "Linux Kernel Module Injection Detected", "Debugfs Launched in Privileged Container",
    "Detect release_agent File Container Escapes", "PTRACE attached to process",
    "PTRACE anti-debug attempt", "Find AWS Credentials", "Execution from /dev/shm",
    "Drop and execute new binary in container", "Disallowed SSH Connection Non Standard Port",
    "Fileless execution via memfd_create",
}
INCUBATING_RULES = {
    "Modify Shell Configuration File", "Schedule Cron Jobs", "Read ssh information",
    "DB program spawned process", "Change thread namespace", "Change namespace privileges via unshare",
    "Launch Privileged Container", "Launch Excessively Capable Container",
    "System procs network activity", "Program run with disallowed http proxy env",
    "Unexpected UDP Traffic", "Non sudo setuid", "User mgmt binaries", "Create files below dev",
    "Contact EC2 Instance Metadata Service From Container",
    "Contact cloud metadata service from container",
    "Launch Package Management Process in Container", "Launch Suspicious Network Tool in Container",
    "Launch Suspicious Network Tool on Host", "Delete or rename shell history",
    "Set Setuid or Setgid bit", "Launch Remote File Copy Tools in Container",
    "Network Connection outside Local Subnet", "Mount Launched in Privileged Container",
    "Launch Ingress Remote File Copy Tools in Container", "Read environment variable from /proc files",
    "Exfiltrating Artifacts via Kubernetes Control Plane", "Adding ssh keys to authorized_keys",
    "Potential Local Privilege Escalation via Environment Variables Misuse",
    "Backdoored library loaded into SSHD (CVE-2024-3094)", "BPF Program Not Profiled",
}
SANDBOX_RULES = {
    "Unexpected inbound connection source", "Read Shell Configuration File",
    "Update Package Repository", "Write below binary dir", "Write below monitored dir",
    "Write below etc", "Write below root", "Write below rpm database", "Modify binary dirs",
    "Mkdir binary dirs", "Launch Sensitive Mount Container", "Launch Disallowed Container",
    "Interpreted procs inbound network activity", "Interpreted procs outbound network activity",
    "Unexpected K8s NodePort Connection", "Create Hidden Files or Directories",
    "Detect outbound connections to common miner pool ports",
    "Detect crypto miners using the Stratum protocol", "Kubernetes Client Tool Launched in Container",
    "Container Drift Detected (chmod)", "Container Drift Detected (open+create)",
    "Container Run as Root User", "Sudo Potential Privilege Escalation",
    "Unprivileged Delegation of Page Faults Handling to a Userspace Process",
    "Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)",
    "Java Process Class File Download", "Modify Container Entrypoint", "Decoding Payload in Container",
    "Basic Interactive Reconnaissance", "Netcat/Socat Remote Code Execution on Host",
    "Network Tool Executed During NPM Package Install", "Known Cryptominer Process Executed",
    "Web Server Spawned Shell", "Web Server Spawned Suspicious Child Process",
    "Reverse Shell from Web Server", "Privileged Container Device Access",
    "Container Access to Host Sensitive Paths",
}
SANDBOX_DISABLED = {
    "Unexpected inbound connection source", "Read Shell Configuration File",
    "Interpreted procs inbound network activity", "Interpreted procs outbound network activity",
    "Unexpected K8s NodePort Connection", "Create Hidden Files or Directories",
    "Detect outbound connections to common miner pool ports", "Container Drift Detected (chmod)",
    "Container Drift Detected (open+create)", "Container Run as Root User",
    "Java Process Class File Download", "Modify Container Entrypoint",
}


def validate(files) -> dict:
    r = subprocess.run([VIGIL, "rules", "validate", "--json", *map(str, files)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def loaded(files) -> RuleEngine:
    return RuleEngine.from_files([str(f) for f in files])


def test_stable_file_loads_with_exactly_its_rules():
    files = falco_files(STABLE)
    eng = loaded(files)
    assert {r.name for r in eng.rules} == STABLE_RULES
    assert all(r.enabled for r in eng.rules)
    s = validate(files)
    assert s["ok"] is True and s["errors"] == [] and s["rules_loaded"] == 25


def test_incubating_on_stable_adds_exactly_its_rules():
    files = falco_files(INCUBATING)
    eng = loaded(files)
    names = {r.name for r in eng.rules}
    assert names - STABLE_RULES == INCUBATING_RULES
    assert names == STABLE_RULES | INCUBATING_RULES
    assert validate(files)["rules_loaded"] == 56


def test_sandbox_on_incubating_adds_exactly_its_rules():
    files = falco_files(SANDBOX)
    eng = loaded(files)
    names = {r.name for r in eng.rules}
    assert names - STABLE_RULES - INCUBATING_RULES == SANDBOX_RULES
    assert {r.name for r in eng.rules if not r.enabled} == SANDBOX_DISABLED
    s = validate(files)
    # disabled rules are defined: they count as loaded
    assert s["rules_loaded"] == 93 and s["ok"] is True


@pytest.mark.parametrize("upto", [STABLE, INCUBATING, SANDBOX])
def test_run_dry_loads_each_combination(upto, tmp_path):
    """`vigil rules list` (what `run -r` loads) takes each combination."""
    files = falco_files(upto)
    args = [a for f in files for a in ("--rules", str(f))]
    r = subprocess.run([VIGIL, "rules", "list", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Fileless execution via memfd_create" in r.stdout


def test_quoted_list_items_are_strings_in_the_condition():
    """Falco pastes list items into the condition: '"10.0.0.0/8"' is the network."""
    eng = RuleEngine.from_text("""
- list: nets
  items: ['"10.0.0.0/8"', '"192.168.0.0/16"']
- list: cmds
  items: ['"sh -c uname -p 2> /dev/null"', plain]
- rule: R
  desc: d
  condition: (evt.type=connect and fd.rnet in (nets)) or (evt.type=execve and proc.cmdline in (cmds))
  output: o
  priority: WARNING
""")
    from vigil.events import Event, Kind
    hit = Event(Kind.CONNECT, pid=1, comm="x", family="AF_INET", proto="tcp", saddr="10.1.1.1",
                sport=1000, daddr="10.2.2.2", dport=80, ret=0, fd=3)
    miss = Event(Kind.CONNECT, pid=1, comm="x", family="AF_INET", proto="tcp", saddr="10.1.1.1",
                 sport=1000, daddr="8.8.8.8", dport=80, ret=0, fd=3)
    sh = Event(Kind.EXEC, pid=2, comm="sh", exe="/bin/sh",
               args=["sh", "-c", "uname", "-p", "2>", "/dev/null"])
    assert eng.evaluate(hit) and not eng.evaluate(miss) and eng.evaluate(sh)
