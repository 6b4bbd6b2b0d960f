"""The jobs' network policy, enforced by the kernel: an nftables table matching the job users' uids.

`python3 -I -m fondation_agent.sandbox.netpolicy apply` (fondation-jobs-network.service, root, before the
launcher and the agents) reads job_network_allow / job_network_deny from the workers' configuration
files, the resolvers from /etc/resolv.conf and the pool's uids, and replaces the table
`inet fondation_jobs` in one transaction. Packets sent by a job user's socket then pass, in order:

1. DNS (udp/tcp port 53) to the configured resolvers (on some clouds that is 169.254.169.254 itself);
2. job_network_allow;
3. rejected: job_network_deny, the default private ranges (DEFAULT_DENY), and any address of the
   host itself (`fib daddr type local`: loopback, the agent's ports wherever they listen);
4. everything else (the Internet: GitHub, Anthropic).

Packets of every other user never enter the job chain. `print` shows the ruleset instead.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from fondation_agent.sandbox.launcher import NFT_TABLE, pool_users

CONFIG_DIR = Path("/etc/fondation-agent")
RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_DENY = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "::1/128", "fe80::/10", "fc00::/7",
)
KEYS = ("job_network_allow", "job_network_deny")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(Exception):
    pass


def parse_networks(values: Iterable[str], key: str) -> list[Network]:
    """Addresses or CIDR prefixes ("10.1.2.3", "fd00::/8"); host bits are masked off."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise PolicyError(f"{key}: {value!r} is not an IP address or prefix") from None
    return networks


def resolvers(resolv_conf: Path = RESOLV_CONF) -> list[Network]:
    found = []
    try:
        lines = resolv_conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            # A scoped IPv6 address (fe80::1%eth0) names its interface; the address is what counts.
            found.extend(parse_networks([fields[1].partition("%")[0]], "resolv.conf"))
    return found


def policy_from_configs(paths: Sequence[Path]) -> tuple[list[Network], list[Network]]:
    """(allow, deny) of the workers' files, which must agree: the rules are the host's, not a worker's."""
    seen: dict[tuple[tuple[str, ...], ...], Path] = {}
    for path in paths:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise PolicyError(f"{path}: {error}") from None
        lists = []
        for key in KEYS:
            value = document.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise PolicyError(f"{path}: {key} must be a list of strings")
            lists.append(tuple(str(network) for network in parse_networks(value, key)))
        seen.setdefault(tuple(lists), path)
    if len(seen) > 1:
        raise PolicyError("job_network_allow/deny differ between " + ", ".join(str(p) for p in seen.values())
                          + ": every worker of a host shares one set of rules")
    allow, deny = next(iter(seen), ((), ()))
    return parse_networks(allow, KEYS[0]), parse_networks(deny, KEYS[1])


def _elements(networks: Iterable[Network], version: int) -> str:
    """One family's prefixes, overlaps merged (nft refuses overlapping intervals in a set)."""
    return ", ".join(str(network) for network in ipaddress.collapse_addresses(
        network for network in networks if network.version == version))


def ruleset(uids: Iterable[int], allow: Sequence[Network], deny: Sequence[Network],
            dns: Sequence[Network]) -> str:
    family, name = NFT_TABLE
    denied = [*parse_networks(DEFAULT_DENY, "default"), *deny]
    rules = []
    for version, match in ((4, "ip daddr"), (6, "ip6 daddr")):
        if servers := _elements(dns, version):
            rules.append(f"{match} {{ {servers} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    for version, match in ((4, "ip daddr"), (6, "ip6 daddr")):
        if allowed := _elements(allow, version):
            rules.append(f"{match} {{ {allowed} }} accept")
    for version, match in ((4, "ip daddr"), (6, "ip6 daddr")):
        if refused := _elements(denied, version):
            rules.append(f"{match} {{ {refused} }} counter reject with icmpx type admin-prohibited")
    rules.append("fib daddr type local counter reject with icmpx type admin-prohibited")
    members = ", ".join(str(uid) for uid in sorted(set(uids)))
    jump = f"\n        meta skuid {{ {members} }} jump job" if members else ""  # no job users: nothing to match
    body = "\n".join(f"        {rule}" for rule in rules)
    # "table; delete table; table {…}": one transaction that replaces ours and touches no other table.
    return (
        f"table {family} {name}\ndelete table {family} {name}\n"
        f"table {family} {name} {{\n"
        f"    chain output {{\n        type filter hook output priority filter; policy accept;{jump}\n    }}\n"
        f"    chain job {{\n{body}\n    }}\n}}\n"
    )


def host_ruleset(config_dir: Path = CONFIG_DIR) -> str:
    allow, deny = policy_from_configs(sorted(config_dir.glob("*.toml")))
    return ruleset((user.pw_uid for user in pool_users()), allow, deny, resolvers())


def main(argv: Sequence[str]) -> int:
    if list(argv) not in (["apply"], ["print"]):
        print("usage: python3 -m fondation_agent.sandbox.netpolicy apply|print", file=sys.stderr)
        return 64
    try:
        rules = host_ruleset()
    except PolicyError as error:
        print(f"fondation-jobs-network: {error}", file=sys.stderr)
        return 78
    if argv[0] == "print":
        print(rules, end="")
        return 0
    done = subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True, check=False)
    if done.returncode != 0:
        print(f"fondation-jobs-network: nft refused the rules: {done.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
