# The four lab images from one Dockerfile. Run from the repository root (paths are relative to it):
#
#   docker buildx bake -f docker/docker-bake.hcl                  # dla/lab1 … dla/lab4 (:latest)
#   docker buildx bake -f docker/docker-bake.hcl lab3             # one image
#   TAG=0.1.0 REGISTRY=ghcr.io/me docker buildx bake -f docker/docker-bake.hcl --push
#   docker buildx bake -f docker/docker-bake.hcl \
#       --set '*.args.TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu'   # CPU-only images
#
# Versions (base image, torch, torchvision, where torch comes from) are pinned once, as the ARG defaults
# at the top of docker/Dockerfile; override them with --set '*.args.NAME=value'. The stages below the
# labs (python, torch, runtime) are shared, so bake builds torch once for all four images, and the four
# images share those layers on disk.

variable "REGISTRY" {
  default = "dla"
}

variable "TAG" {
  default = "latest"
}

group "default" {
  targets = ["lab1", "lab2", "lab3", "lab4"]
}

# Common settings; the leading underscore marks a target that is only inherited, never built.
target "_lab" {
  context    = "."
  dockerfile = "docker/Dockerfile"
}

target "lab1" {
  inherits = ["_lab"]
  target   = "lab1"
  tags     = ["${REGISTRY}/lab1:${TAG}"]
}

target "lab2" {
  inherits = ["_lab"]
  target   = "lab2"
  tags     = ["${REGISTRY}/lab2:${TAG}"]
}

target "lab3" {
  inherits = ["_lab"]
  target   = "lab3"
  tags     = ["${REGISTRY}/lab3:${TAG}"]
}

target "lab4" {
  inherits = ["_lab"]
  target   = "lab4"
  tags     = ["${REGISTRY}/lab4:${TAG}"]
}
