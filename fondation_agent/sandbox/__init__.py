"""How a CLI is started and confined.

runner (the interface, limits, outcomes), process_runner (a process group: laptops, CI),
service_runner (a hardened transient systemd service, through the root launcher), launcher (that
launcher: root, socket-activated), netpolicy (the job users' network rules), workspace (a job's
directory).

May import: fondation_agent.host (its logger). launcher and netpolicy, which run as root, import
nothing of the agent but each other.
"""
