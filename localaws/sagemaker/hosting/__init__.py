"""SageMaker hosting: models, endpoint configs and endpoints that really serve.

``models.py``      the resources and their state (the SageMaker API operations)
``lifecycle.py``   what an endpoint does: create, blue/green update, scale, replace, delete
``fleet.py``       serving instances: model data, containers or processes, health checks, stop
``router.py``      InvokeEndpoint: a variant by weight, an instance of it, the container's answer
``metrics.py``     per-variant AWS/SageMaker metrics (CloudWatch, and Application Auto Scaling's measure)
``runtime.py``     sagemaker-runtime's wire protocol (POST /endpoints/<name>/invocations)

Application Auto Scaling, which scales variants, is a service of its own: ``localaws/applicationautoscaling``.
"""
