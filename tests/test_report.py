"""report.html: self-contained, every figure present, and it renders in a real browser."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

import lvmkit
from lvmkit.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_embeds_every_figure(trained_run):
    lvmkit.evaluate(trained_run, k=10)
    path = write_report(trained_run)
    html = path.read_text()
    imgs = _images(html)
    # loss curves, reconstructions, samples, samples per epoch, latent scatter, decoded latent grid (latent_dim = 2)
    assert len(imgs) == 6 and all(i.startswith(PNG) and len(i) > 1000 for i in imgs)
    assert not re.search(r'src="(?!data:)', html), "report must not reference external files"
    for heading in ("Metrics", "Loss curves", "Reconstructions", "Samples", "Latent space", "Configuration"):
        assert f"<h2>{heading}</h2>" in html
    assert "log_likelihood" in html and "latent_dim = 2" in html
    assert sorted(p.name for p in (trained_run.figures).iterdir()) == [
        "epoch_samples.png", "latent_grid.png", "latent_scatter.png", "loss_curves.png", "reconstructions.png", "samples.png"]


def test_report_for_wide_latent_uses_pca_and_tabular_data(tmp_path):
    import numpy as np

    from conftest import tiny_config

    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(120, 5)), y=np.arange(120) % 3)
    cfg = tiny_config(data={"name": "npz", "path": str(tmp_path / "t.npz")}, model={"latent_dim": 4, "likelihood": "gaussian"})
    run = lvmkit.train(cfg, tmp_path / "r", progress=False)
    html = write_report(run).read_text()
    assert "PCA of the 4-D posterior means" in html and len(_images(html)) == 4  # no latent grid


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs Debian's 'chromium'); apt-get install chromium")
def test_report_renders_in_headless_chromium(trained_run, tmp_path):
    html = write_report(trained_run).read_text()
    # A probe script counts the images the browser decoded and writes the count into the title.
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
             "document.title='IMAGES '+im.length+' LOADED '+im.filter(i=>i.complete&&i.naturalWidth>0).length;});</script>")
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>IMAGES (\d+) LOADED (\d+)</title>", res.stdout)
    assert m, res.stdout[:500] + res.stderr[-2000:]
    assert m.group(1) == m.group(2) == "6"  # as test_report_embeds_every_figure counts


def test_sample_grids_of_either_storage_read_as_grey_levels():
    from lvmkit.report.page import _grey

    np.testing.assert_allclose(_grey(np.array([0, 51, 255], dtype=np.uint8)), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(_grey(np.array([0.0, 0.2, 1.0], dtype=np.float32)), [0.0, 0.2, 1.0])
