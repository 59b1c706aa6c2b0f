# The image every Ray pod of the KubeRay manifests runs (deploy/kuberay/): this project installed on Ray's own
# GPU image, whose Ray (and Python) must match what the project is tested with (`ray.__version__` of the
# development environment; tests/test_deploy.py checks the tag below against it).
#
#   docker build -t YOUR-REGISTRY/autoformer:ray2.60.0-py311-gpu .
#   docker push YOUR-REGISTRY/autoformer:ray2.60.0-py311-gpu
#
# torch comes from PyPI, whose Linux wheels are CUDA builds (the CUDA runtime ships in the wheel; the nodes need
# an NVIDIA driver recent enough for it). For nodes with an older driver pick a CUDA build explicitly, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 ...
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu

ARG RAY_VERSION
ARG TORCH_INDEX_URL=

WORKDIR /home/ray/autoformer
COPY --chown=ray:users . .

# A regular (non-editable) install: the package, its built-in search spaces, tasks and architectures, and the
# `autoformer` command. Ray is pinned to the image's own version so pip never swaps it for another one.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir torch torchvision --index-url "$TORCH_INDEX_URL"; \
    fi \
    && pip install --no-cache-dir . "ray[default,train,tune]==${RAY_VERSION}" \
    && rm -rf build ./*.egg-info \
    && autoformer --version

# Run commands from a scratch directory, not from the source tree (an installed copy, not the checkout, is what runs).
WORKDIR /home/ray
