"""fondation-agent: runs course-generation jobs from a Convex queue."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fondation-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
