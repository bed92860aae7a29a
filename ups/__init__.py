"""UPS command line and settings shared by dataflow/, scoring/, api/ and storage/."""

from .settings import Settings

__all__ = ["Settings"]
