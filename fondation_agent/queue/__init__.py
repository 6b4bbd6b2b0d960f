"""The Convex side: the queue's functions seen from the agent.

convex_api (the HTTP client and the worker functions), wake (the subscription to worker:nextDue,
in its own asyncio thread; the herd delay), claim_schedule (when to claim next), rules (the queue's
vocabulary and limits, from rules.json: a copy of the component's queue/component/rules.json).

May import: nothing of fondation_agent but its __version__.
"""
