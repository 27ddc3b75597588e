"""SSM Run Command for the project's host documents, carried out by localaws (``agent.py``), and the
public Deep Learning AMI parameters moto lacks (``seed.py``). Everything else SSM goes to moto."""
from localaws.ssm.agent import TARGET_PREFIX, SsmAgent

__all__ = ["TARGET_PREFIX", "SsmAgent"]
