"""Reading back the runs' notifications from localaws: an SQS queue subscribed to an SNS topic, as a user's
own subscriber would, and the e-mails SES sent (moto's records, over HTTP)."""

from __future__ import annotations

import json
import time
import urllib.request


class Inbox:
    """An SNS topic of ``localaws`` (a tests.conftest.LocalAWSProcess) with an SQS queue subscribed to it:
    each notification, by the run its ``run`` attribute names."""

    def __init__(self, localaws, name: str):
        sns, self.sqs = localaws.client("sns"), localaws.client("sqs")
        self.topic_arn = sns.create_topic(Name=name)["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        self.by_run: dict[str, list[dict]] = {}

    def receive(self) -> list[dict]:
        """What arrived since the last call, each {"subject", "message", "attributes"}, received and deleted."""
        arrived = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not messages:
                return arrived
            for message in messages:
                body = json.loads(message["Body"])  # SNS's envelope
                attributes = {name: value["Value"] for name, value in body.get("MessageAttributes", {}).items()}
                notification = {"subject": body.get("Subject"), "message": body["Message"], "attributes": attributes}
                arrived.append(notification)
                self.by_run.setdefault(attributes.get("run", ""), []).append(notification)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def of_run(self, key: str, timeout: float = 20) -> list[dict]:
        """Every notification of run ``key`` (waiting up to ``timeout`` for the first)."""
        deadline = time.monotonic() + timeout
        self.receive()
        while key not in self.by_run and time.monotonic() < deadline:
            time.sleep(0.5)
            self.receive()
        return self.by_run.get(key, [])


def ses_messages(endpoint_url: str) -> list[dict]:
    """The e-mails SES sent (moto keeps them; ``/moto-api/data.json`` serves its records): each raw one's
    {"source", "destinations", "raw_data"}."""
    with urllib.request.urlopen(endpoint_url + "/moto-api/data.json", timeout=30) as response:
        data = json.loads(response.read())
    return list(data.get("ses", {}).get("RawMessage", []))
