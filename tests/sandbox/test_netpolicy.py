"""The job network rules as text (the kernel's verdicts are tested in the VM tier: test_35_hostile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fondation_agent.sandbox.netpolicy import PolicyError, parse_networks, policy_from_configs, resolvers, ruleset


def test_rules_allow_dns_then_the_allow_list_then_refuse_the_private_ranges_and_the_host(tmp_path: Path) -> None:
    text = ruleset([1002, 1001], parse_networks(["10.77.0.2"], "a"),
                   parse_networks(["203.0.113.0/24", "10.1.0.0/16"], "d"),  # overlaps merge
                   parse_networks(["169.254.169.254", "fe80::1"], "r"))
    assert text.startswith("table inet fondation_jobs\ndelete table inet fondation_jobs\n")
    assert "meta skuid { 1001, 1002 } jump job" in text
    lines = [line.strip() for line in text.split("chain job {", 1)[1].splitlines() if line.strip() not in ("", "}")]
    assert lines[0] == "ip daddr { 169.254.169.254/32 } meta l4proto { tcp, udp } th dport 53 accept"
    assert lines[1] == "ip6 daddr { fe80::1/128 } meta l4proto { tcp, udp } th dport 53 accept"
    assert lines[2] == "ip daddr { 10.77.0.2/32 } accept"
    assert lines[3].startswith("ip daddr { 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, "
                               "172.16.0.0/12, 192.168.0.0/16, 203.0.113.0/24 } counter reject"), lines[3]
    assert lines[4].startswith("ip6 daddr { ::1/128, fc00::/7, fe80::/10 } counter reject")
    assert lines[5].startswith("fib daddr type local counter reject")


def test_no_job_users_means_no_packet_enters_the_job_chain() -> None:
    assert "jump" not in ruleset([], [], [], [])


def test_resolvers_come_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# a comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch example.org\n")
    assert [str(n) for n in resolvers(conf)] == ["127.0.0.53/32", "fe80::1/128"]
    assert resolvers(tmp_path / "missing") == []


def test_every_worker_of_a_host_must_agree(tmp_path: Path) -> None:
    one, two = tmp_path / "agent.toml", tmp_path / "2.toml"
    one.write_text('job_network_allow = ["10.1.0.0/16"]\n')
    two.write_text('job_network_allow = ["10.1.0.0/16"]\nconvex_url = "x"\n')
    allow, deny = policy_from_configs([one, two])
    assert ([str(n) for n in allow], deny) == (["10.1.0.0/16"], [])
    two.write_text('job_network_allow = ["10.2.0.0/16"]\n')
    with pytest.raises(PolicyError, match="differ between"):
        policy_from_configs([one, two])
    assert policy_from_configs([]) == ([], [])


def test_a_bad_entry_names_its_key() -> None:
    with pytest.raises(PolicyError, match="job_network_deny: 'nope' is not an IP address or prefix"):
        parse_networks(["nope"], "job_network_deny")
