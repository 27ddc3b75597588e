"""SageMaker batch transform: transform jobs that really run the model over S3 data.

``models.py``          the jobs and their state (CreateTransformJob, Describe, List, Stop)
``executor.py``        what a job does: the model's containers (started by hosting's fleet), the
                       requests to /invocations, the outputs in S3, the logs
``work.py``            one instance's share: its requests (MaxConcurrentTransforms threads), answers in order
``records.py``         objects as records (SplitType) and records as requests (BatchStrategy, MaxPayloadInMB)
``dataprocessing.py``  InputFilter, JoinSource and OutputFilter (SageMaker's JSONPath subset)
"""
