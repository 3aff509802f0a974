"""brian2cuda code generation without a GPU (run in .venv-cuda: `make test`'s second pytest line).

Generates the cuda_standalone project of a small conv net (no nvcc, no GPU) and checks that
the code exists and contains the kernels of every layer, synapse and monitor. The full nvcc
build is `make cuda-build` (minutes)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.cuda

import brian2cuda  # noqa: E402,F401  -- must import here: this file runs only in .venv-cuda (make test)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from bioconv.engines.cuda_build import generate

    return generate(tmp_path_factory.mktemp("cuda") / "project", compile=False)


def test_generated_project_has_code(project):
    d = project.directory
    for name in ("main.cu", "network.cu", "objects.cu", "run.cu", "makefile"):
        assert (d / name).is_file(), name
    assert any((d / "code_objects").glob("conv1_stateupdater_codeobject.cu"))
    assert not (d / "main").exists()  # code generation only, no nvcc
    makefile = (d / "makefile").read_text()
    assert "-std=c++17" in makefile and "sm_80" in makefile
    assert "curand" in makefile


def test_generated_kernels_cover_every_layer(project):
    from bioconv.engines.cuda_build import kernels

    found = set(kernels(project.directory))
    for layer in ("conv1", "pool1", "fc"):
        assert f"_run_kernel_{layer}_stateupdater_codeobject" in found
        assert f"_run_kernel_{layer}_spike_thresholder_codeobject" in found
        assert f"_run_kernel_{layer}_spike_resetter_codeobject" in found
        assert f"_run_kernel_{layer}_syn_pre_codeobject" in found  # spike propagation
        assert f"_run_kernel_{layer}_image_reset_codeobject" in found  # run_regularly between images
        assert f"_run_kernel_{layer}_count_mon_codeobject" in found
    assert "_run_kernel_input_spike_thresholder_codeobject" in found
    assert "_run_kernel_out_bin_mon_codeobject" in found


def test_run_parameters_are_settable_from_the_command_line(project):
    """Weights, biases, thresholds and the input TimedArray are run_args (no recompile per batch)."""
    objects = (project.directory / "objects.cu").read_text()
    for name in ("conv1_syn.w", "conv1.I_bias", "conv1.theta", "fc_syn.w", "ta_in.values"):
        assert f'"{name}"' in objects, name
    assert set(project.manifest["params"]) >= {"conv1_syn.w", "pool1_syn.w", "fc_syn.w", "ta_in.values"}


def test_convolution_uses_the_weight_shared_template(project):
    """conv1's pathway is bioconv's procedural CUDA kernel: kernel weights only, atomic on_pre."""
    d = project.directory
    code = (d / "code_objects" / "conv1_syn_pre_codeobject.cu").read_text()
    assert "_kernel_idx" in code and "_postsynaptic_idx" in code
    assert "_brian_atomicAdd(&_ptr_array_conv1_v[_postsynaptic_idx]" in code  # on_pre from Brian2, made atomic
    assert "_ptr_array_conv1_syn_w[_kernel_idx]" in code
    assert not (d / "code_objects" / "conv1_syn_pre_push_spikes.cu").exists()  # no spike queue
    assert (d / "code_objects" / "pool1_syn_pre_push_spikes.cu").exists()  # pools and dense stay explicit
    assert project.manifest["params"]["conv1_syn.w"] == [4 * 1 * 3 * 3]


def test_explicit_convolution_still_generates(tmp_path):
    from bioconv.engines.cuda_build import generate

    sim = generate(tmp_path / "explicit", compile=False, conv="explicit")
    assert (sim.directory / "code_objects" / "conv1_syn_pre_push_spikes.cu").exists()
    from bioconv.connectivity import layer_synapse_count
    from bioconv.engines.cuda_build import small_graph

    assert sim.manifest["params"]["conv1_syn.w"] == [layer_synapse_count(small_graph().layer("conv1"))]
