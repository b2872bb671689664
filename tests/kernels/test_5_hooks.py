"""Optional hooks on this kernel (docs/KERNELS.md, "Hooks"): the open-deny verb
(VigilPolicy file.deny: EPERM where lsm/file_open or fmod_ret/security_file_open
serves, a SIGKILL at the open's exit on the tracepoint path) and file identity
from fentry/security_file_open where it loads.  The bodies are the host suite's
(tests/test_enforce_file.py, tests/test_hooks.py): the same alerts and fields on
every path, the verdict of the hook the agent took."""
from __future__ import annotations

import os

import pytest

# the emulated VMs start an agent far slower than the host
os.environ.setdefault("VIGIL_TEST_START_TIMEOUT", "400")

import test_enforce_file as F  # noqa: E402
import test_hooks as H  # noqa: E402
from test_enforce_file import setup  # noqa: E402,F401  (the module's agent with file.deny)
from test_hooks import opened  # noqa: E402,F401

OPEN_DENY = "enforcement: open deny"
IDENTITY = "hook: file identity"


def _alerts_in_process(store):
    """What `vigil alerts --store S --json --rule R --limit 0` prints, read in this
    process: in the emulated VMs every command's start (the interpreter, its imports)
    takes seconds, and the host suite runs the command itself."""
    from vigil.alerts.store import AlertStore, row_to_alert

    def alerts(rule) -> list:
        st = AlertStore(str(store), readonly=True)
        try:
            return [row_to_alert(r).to_falco_json() for r in st.query(rule=rule, limit=None)]
        finally:
            st.close()
    return alerts


def _kill(agent):
    """Teardown by SIGKILL: the graceful stop is the host suite's to test, and under TCG
    it takes half a minute (the kernel releases every link with the process)."""
    def stop(*_a, **_k):
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
    return stop


@pytest.mark.timeout(1200)
@pytest.mark.feature(OPEN_DENY)
def test_open_deny(setup, matrix):  # noqa: F811
    agent = setup[1]
    agent.alerts = _alerts_in_process(agent.store)
    agent.stop = _kill(agent)
    status = setup[2]
    hook = status["file_hook"]
    F.test_the_best_hook_this_kernel_has_is_used(setup)
    F.test_a_denied_file_cannot_be_read_by_any_name(setup)
    F.test_audit_mode_reports_and_allows(setup)
    F.test_policy_show_names_the_hook(setup)
    why = "; ".join(f"{h}: {w}" for h, w in status["file_hook_why"].items())
    if hook == "tracepoint":
        matrix.degrade(OPEN_DENY, "opens cannot be refused here (" + why + "): the process is "
                       "killed at the open's exit")
    matrix.note(OPEN_DENY, {"lsm": "lsm/file_open: EPERM",
                            "fmod_ret": "fmod_ret/security_file_open: EPERM",
                            "tracepoint": "tp/syscalls/sys_exit_open*: SIGKILL"}[hook]
                + (f" (not used: {why})" if why and hook != "tracepoint" else ""))


@pytest.mark.feature(IDENTITY)
def test_file_identity_hook(start_pipeline, opened, caplog, matrix):  # noqa: F811
    H.test_file_identity_takes_the_best_hook_and_gives_the_same_event(start_pipeline, opened,
                                                                      caplog)
    if H.fentry_file_available():
        matrix.note(IDENTITY, "fentry/security_file_open (open__identity)")
    else:
        matrix.degrade(IDENTITY, "fentry/security_file_open refused: the exit tracepoints read "
                       "the inode through the new fd")
