"""SageMaker hosting: models, endpoint configs and endpoints that really serve.

``models.py``      the resources and their state (the SageMaker API operations)
``lifecycle.py``   what an endpoint does: create, blue/green update, scale, replace, delete
``fleet.py``       serving instances: model data, containers or processes, health checks, stop
``router.py``      InvokeEndpoint: a variant by weight, an instance of it, the container's answer
``metrics.py``     per-variant AWS/SageMaker metrics (CloudWatch, and the autoscaler's measure)
``autoscaler.py``  Application Auto Scaling for variants: targets, target tracking, activities
``runtime.py``     sagemaker-runtime's wire protocol (POST /endpoints/<name>/invocations)
``autoscaling_responses.py``  Application Auto Scaling's wire protocol (AnyScaleFrontendService.*)
"""
