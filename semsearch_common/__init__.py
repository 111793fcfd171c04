"""The platform every service stands on: gRPC servers and channels, errors, configuration, logging.

No domain logic lives here; each module does one job and any service may use any of them.
"""
