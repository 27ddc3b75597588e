"""Application Auto Scaling for SageMaker variants, a service of its own as in moto's layout.

``models.py``     scalable targets, scaling policies and activities (the state and its API)
``scaling.py``    the scaling loop: target tracking with its CloudWatch alarms, every minute
``responses.py``  the wire protocol (AnyScaleFrontendService.*), sagemaker's namespace ours, the rest moto's

SageMaker hosting is reached through ``models.ScalableVariants``, given at construction (see the gateway).
"""
