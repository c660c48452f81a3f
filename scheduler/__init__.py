"""The queue and its policy: the only code of maas that talks to Redis."""
