"""SSM Run Command for the project's host documents, carried out by localaws (``agent.py`` wires
``models.py``, ``responses.py`` and ``commands.py``), and the public Deep Learning AMI parameters moto
lacks (``seed.py``). Everything else SSM goes to moto."""

from localaws.ssm.agent import SsmAgent
from localaws.ssm.responses import TARGET_PREFIX

__all__ = ["TARGET_PREFIX", "SsmAgent"]
