"""dmask-live: a real-time, identity-free digital mask for telemedicine video."""

__version__ = "0.1.0"
