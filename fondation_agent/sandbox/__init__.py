"""How a CLI is started and confined.

runner (the interface, limits, outcomes), process_runner (a process group: laptops, CI),
service_runner (a hardened transient systemd service, through the root launcher), launcher (that
launcher: root, socket-activated), job_exec and relay (a job's first program and its one way out, to
the Claude gateway), workspace (a job's directory), gateway (the Claude gateway, the only holder of
the Claude credential: a service of its own, or a thread of the agent), claude_access (a job's way
to Claude: the gateway and a token of its attempt's).

May import: fondation_agent.host (its logger). launcher, which runs as root, and job_exec and relay,
which run inside a job, import nothing of the agent but each other and the gateway's constants.
"""
