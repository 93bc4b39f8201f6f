"""The reliability suite (issue 5): bad inputs, faults, secrets and hardening, with figures."""
