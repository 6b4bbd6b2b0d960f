"""How a CLI is started and confined.

runner (the interface, limits, outcomes), process_runner (a process group: laptops, CI),
service_runner (a hardened transient systemd service, through the root launcher), launcher (that
launcher: root, socket-activated), netpolicy (the job users' network rules), workspace (a job's
directory).

May import: nothing of fondation_agent but its __version__ (the launcher runs as root, alone).
"""
