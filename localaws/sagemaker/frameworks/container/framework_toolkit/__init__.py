"""What SageMaker's framework containers do around the user's code, standard library and numpy only.

``training``: sagemaker-training-toolkit's script mode (the source in /opt/ml/code, its
requirements.txt installed, ``python <program> --name value ...`` with the ``SM_*`` environment,
a failure's last error lines in /opt/ml/output/failure). ``serving``: the inference toolkits'
model server (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn``, each
defaulting as the framework's container does: ``handlers``). ``paths``: where /opt/ml is (itself in
a container; ``$SAGEMAKER_BASE_DIR`` under localaws's process runner). ``requirements``: installing
requirements.txt. Runs on the image's Python (3.11 here) and under localaws's process runner alike.
"""
