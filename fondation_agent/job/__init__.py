"""One attempt's life, and everything it reads from the untrusted repository and CLI.

attempt (the Job: clone, run, collect, report, under its lease), repo (safe cloning), cli_contract
(the CLI's progress lines and output layout), cli_output (its log lines), progress_watch (a silent
CLI's progress from its files), results (its documents), untrusted (bounded text, YAML, files),
failures (what an ending means: the job's fault or the host's).

May import: fondation_agent.queue, fondation_agent.sandbox, fondation_agent.host, fondation_agent.config.
"""
