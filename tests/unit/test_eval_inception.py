"""The FID Inception: architecture facts, weights-file handling, preprocessing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from inception_weights import random_inception_weights

from dsgan.errors import ConfigError
from dsgan.eval.features import InceptionFeatures
from dsgan.eval.inception import PREPROCESSING_ID, FIDInceptionV3, InceptionE, _tf_avg_pool, load_inception, preprocess

pytestmark = pytest.mark.usefixtures("one_thread")


def test_state_dict_names_and_shapes_match_pytorch_fid_file():
    state = FIDInceptionV3().state_dict()
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert not any(k.endswith(".bias") for k in state if ".conv." in k)  # convolutions have no bias in the TF graph
    # 94 conv+bn units (5 stem, 3x7 A, 4 B, 4x10 C, 6 D, 2x9 E) and the classifier.
    assert sum(1 for k in state if k.endswith(".conv.weight")) == 94
    # torchvision's inception_v3 has 27,161,264 parameters (its weights metadata); minus AuxLogits (3,326,696),
    # plus 8 more classifier outputs (8 x 2049): the pytorch-fid network.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


def test_tf_pooling_details():
    # TF average pooling ignores padding: a constant map stays constant at the borders.
    x = torch.ones(1, 2, 5, 5)
    assert torch.allclose(_tf_avg_pool(x), x)
    # Mixed_7c pools its side branch with max, Mixed_7b with (TF) average.
    torch.manual_seed(0)
    a, b = InceptionE(16, max_pool=False).eval(), InceptionE(16, max_pool=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 8, 8)
    assert not torch.allclose(a(x), b(x))


def test_preprocess_quantizes_resizes_and_records_it():
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = preprocess(images)
    assert out.shape == (2, 3, 299, 299) and out.min() >= -1 and out.max() <= 1
    q = torch.round((images + 1) * 127.5) / 255
    ref = F.interpolate(q, size=(299, 299), mode="bilinear", align_corners=False, antialias=False) * 2 - 1
    assert torch.allclose(out, ref, atol=1e-6)
    # Real uint8 images mapped to [-1, 1] pass through the quantization unchanged.
    u8 = torch.randint(0, 256, (1, 3, 299, 299)).float() / 127.5 - 1
    assert torch.allclose(preprocess(u8), u8, atol=1e-6)
    assert "align_corners=False" in PREPROCESSING_ID and "antialias=False" in PREPROCESSING_ID
    with pytest.raises(ValueError):
        preprocess(torch.zeros(1, 1, 32, 32))


def test_load_inception_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_inception(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not a readable"):
        load_inception(tmp_path / "junk.pth")
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match="not the TF FID Inception"):
        load_inception(tmp_path / "wrong.pth")


def test_load_inception_without_num_batches_tracked_and_stays_eval(tmp_path):
    state = random_inception_weights(tmp_path / "w.pth", drop_num_batches_tracked=True)
    model = load_inception(tmp_path / "w.pth")
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert len(model.weights_sha256) == 64
    model.train()
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_logits_exclude_fc_bias(tmp_path):
    torch.manual_seed(1)
    model = FIDInceptionV3()
    model.fc.bias.data.normal_()
    features, logits = model(torch.rand(1, 3, 75, 75) * 2 - 1)
    assert torch.allclose(logits, features @ model.fc.weight.T)


@pytest.mark.gpu
def test_cuda_features_match_cpu(tmp_path):
    """fp32 on the GPU with TF32 scoped off agrees with the CPU (TF32 alone would move features by ~1e-3)."""
    random_inception_weights(tmp_path / "inception.pth")
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu_features, cpu_logits = InceptionFeatures(tmp_path / "inception.pth")(images)
    gpu_features, gpu_logits = InceptionFeatures(tmp_path / "inception.pth", "cuda")(images.cuda())
    assert gpu_features.is_cuda
    scale = cpu_features.abs().max()
    assert (gpu_features.cpu() - cpu_features).abs().max() < 1e-3 * scale
    assert (gpu_logits.cpu() - cpu_logits).abs().max() < 1e-3 * cpu_logits.abs().max()


def test_feature_call_keeps_cudnn_flags_by_name(tmp_path, monkeypatch):
    """Inside the extractor, only TF32 is switched off: `deterministic` keeps the caller's value and
    `benchmark_limit` its own (passed positionally, `deterministic` landed in `benchmark_limit`, which CUDA builds
    of torch reject as a bool)."""
    random_inception_weights(tmp_path / "inception.pth")
    extractor = InceptionFeatures(tmp_path / "inception.pth")
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "deterministic", True)
    seen = {}

    def record(*_):
        seen.update(deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32)

    extractor.model.register_forward_pre_hook(record)
    extractor(torch.zeros(1, 3, 32, 32))
    assert seen == {"deterministic": True, "allow_tf32": False}
    assert cudnn.deterministic and cudnn.allow_tf32 == torch.backends.cudnn.allow_tf32
