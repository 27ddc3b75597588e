#!/bin/bash
# The run's host, first boot (cloud-init, as root) on the AWS Deep Learning AMI, which ships Docker,
# the SSM agent and the accelerator's driver and container runtime. Checks them and reports readiness:
# /var/lib/ml-pipeline/ready (or not-ready, with the reason), read by the MLPipeline-HostCheck command.
# ${Accelerator} and ${RunKey} are filled in by plugins/ml_pipeline/infra/stack.py.
set -uo pipefail
ACCELERATOR="${Accelerator}"
STATE=/var/lib/ml-pipeline
mkdir -p "$STATE"
exec > >(tee -a /var/log/ml-pipeline-user-data.log) 2>&1
echo "ml-pipeline run ${RunKey}: checking the host ($ACCELERATOR)"
not_ready() { echo "NOT READY: $*"; echo "$*" > "$STATE/not-ready"; exit 1; }

systemctl enable --now docker >/dev/null 2>&1 || true
for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 2; done
docker info >/dev/null 2>&1 || not_ready "docker is not running"

case "$ACCELERATOR" in
  nvidia)
    nvidia-smi -L || not_ready "nvidia-smi finds no GPU"
    docker info --format '{{json .Runtimes}}' | grep -q nvidia || not_ready "the NVIDIA container runtime is missing"
    ;;
  habana)
    hl-smi -L || hl-smi || not_ready "hl-smi finds no Gaudi device"
    docker info --format '{{json .Runtimes}}' | grep -q habana || not_ready "the Habana container runtime is missing"
    ;;
  *) not_ready "unknown accelerator $ACCELERATOR" ;;
esac

# The CloudWatch agent: the training document starts it with include/cloudwatch/host-agent.json, so that the
# host's CPU, memory, disk and nvidia-smi (or hl-smi) figures reach CloudWatch (CWAgent, read back into the
# run's summary). Without it the run only lacks those figures: a failed install is said, not fatal.
CW_CTL=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
if [ ! -x "$CW_CTL" ]; then
  TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
  REGION=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/placement/region)
  if command -v dpkg >/dev/null; then
    PACKAGE="https://amazoncloudwatch-agent-$REGION.s3.$REGION.amazonaws.com/ubuntu/$(dpkg --print-architecture)/latest/amazon-cloudwatch-agent.deb"
    curl -sfo /tmp/amazon-cloudwatch-agent.deb "$PACKAGE" && dpkg -i -E /tmp/amazon-cloudwatch-agent.deb >/dev/null
  else
    dnf install -y -q amazon-cloudwatch-agent || yum install -y -q amazon-cloudwatch-agent
  fi || true
  rm -f /tmp/amazon-cloudwatch-agent.deb
fi
if [ -x "$CW_CTL" ]; then echo "CloudWatch agent: installed"; else echo "CloudWatch agent: could not be installed (no host metrics)"; fi

systemctl is-active --quiet snap.amazon-ssm-agent.amazon-ssm-agent.service \
  || systemctl is-active --quiet amazon-ssm-agent \
  || not_ready "the SSM agent is not running"
rm -f "$STATE/not-ready"
date -u +%Y-%m-%dT%H:%M:%SZ > "$STATE/ready"
echo "READY"
