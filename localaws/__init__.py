"""localaws: a local AWS on one endpoint. SageMaker goes to our engine, which really trains,
tunes and serves; every other service goes to an embedded moto."""
