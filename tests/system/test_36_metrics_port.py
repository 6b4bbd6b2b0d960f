"""The agent's metrics port stays the agent's: no job user can take it while the agent restarts or
crashes (systemd's file descriptor store holds the listening socket meanwhile: Debian 12's systemd
cannot forbid binding, SocketBindDeny= needs its BPF framework), and one that takes it after a stop
cannot keep the agent down."""

from __future__ import annotations

from tests.system.guest import UNIT, GuestAgent

SQUAT_LOG = "/run/fondation-test-squat.log"
SQUAT_STOP = "/run/fondation-test-squat.stop"
# A job user trying to take the agent's port every 10 ms; once it has it, it holds it until told to stop.
SQUATTER = ("import os, socket, time\n"
            "held = None\n"
            f"while not os.path.exists({SQUAT_STOP!r}):\n"
            "    if held is None:\n"
            "        try:\n"
            "            held = socket.create_server(('127.0.0.1', 9810))\n"
            "            print('bound', flush=True)\n"
            "        except OSError:\n"
            "            pass\n"
            "    time.sleep(0.01)\n"
            "print('done', flush=True)\n")


def squatter_said(agent: GuestAgent) -> list[str]:
    return agent.vm.ssh(f"cat {SQUAT_LOG}").stdout.split()


def test_no_job_user_takes_the_metrics_port_while_the_agent_restarts_or_crashes(agent: GuestAgent) -> None:
    vm = agent.vm
    vm.put("/run/fondation-test-squatter.py", SQUATTER, mode="0644")
    vm.ssh(f"rm -f {SQUAT_LOG} {SQUAT_STOP}; systemd-run --quiet --unit=fondation-test-squat -p User=fondation-job-1 "
           f"-p StandardOutput=file:{SQUAT_LOG} python3 /run/fondation-test-squatter.py")
    try:
        vm.wait_for("systemctl show fondation-test-squat -p ActiveState --value", lambda out: out.strip() == "active",
                    timeout=60)
        agent.restart()
        assert squatter_said(agent) == []
        before = agent.show()["NRestarts"]
        vm.ssh(f"systemctl kill -s KILL {UNIT}")  # a crash: Restart=on-failure starts it again after RestartSec=
        vm.wait_for(f"systemctl show {UNIT} -p NRestarts --value", lambda out: out.strip() != before, timeout=120)
        agent.wait_active()
        assert squatter_said(agent) == []
        assert vm.ssh("curl -sS -m 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:9810/health"
                      ).stdout.strip() == "200"

        # A stop empties the store (systemd 252 has no FileDescriptorStorePreserve=): the squatter gets
        # the port, and the agent, started again, runs without its endpoint until the port is free.
        vm.ssh(f"systemctl stop {UNIT}", timeout=300)
        vm.wait_for(f"cat {SQUAT_LOG}", lambda out: "bound" in out, timeout=60)
        vm.ssh(f"systemctl start {UNIT}", timeout=300)
        state = agent.wait_active()
        assert "no metrics endpoint yet (127.0.0.1:9810" in state["StatusText"], state
    finally:
        vm.ssh(f"touch {SQUAT_STOP}; systemctl stop fondation-test-squat", check=False)
    vm.wait_for("curl -sS -m 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:9810/health",
                lambda out: out.strip() == "200", timeout=180)
    assert agent.show()["NRestarts"] == state["NRestarts"]
