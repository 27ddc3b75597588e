"""The run's own infrastructure: a VPC and a GPU or Habana DL1 host, training on that host, teardown.

    params.py         infra_params() (Airflow Params), validate_infra() (refusals before anything
                      exists), check_ami() / preflight() (the AMI and availability zone, asked of AWS)
    tags.py           what every resource carries: project, run, created-at, ttl-hours
    provisioning.py   the provisioning steps in order: what each builds on and the state it waits for
    stack.py          idempotent provisioning steps, each ``step(client, plan, [ids]) -> ids``
    iam.py            the policy documents in include/iam/, rendered
    host_training.py  the training image on the host through SSM Run Command (include/ssm/)
    teardown.py       teardown_stack(client, run_key): every resource tagged with the run, in order
    reaper.py         what outlived its TTL, and endpoints nobody calls
    operators.py      provider operators made safe to retry (re-attach instead of duplicating)
    sensors.py        waits on each resource's state, and on the host being ready for SSM

``client`` is always a callable ``client(service) -> boto3 client`` (the DAG's ``client``,
or ``LocalAWSProcess.client`` in tests), so the same code runs on AWS and on localaws.
"""
