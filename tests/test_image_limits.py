"""The one image reader: pixel limit from the header, bombs and corrupt files as one ImageError,
non-regular files refused (issue 16)."""
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from caffelrp import cli, imageio, preprocess
from caffelrp.imageio import ImageError

from test_cli_explain import explain, make_image, model  # noqa: F401  (fixture)


def png_declaring(width, height):
    """A tiny PNG whose header declares width x height (8-bit RGB) and whose data is a stub."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def gif_declaring(width, height):
    """A 29-byte GIF whose screen and first frame declare width x height."""
    data = (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00;")
    return data


@pytest.mark.parametrize("make, size", [(png_declaring, (30000, 30000)),
                                        (png_declaring, (13000, 13000)),
                                        (gif_declaring, (65535, 65535))])
def test_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path, make, size):
    path = tmp_path / ("bomb.gif" if make is gif_declaring else "bomb.png")
    path.write_bytes(make(*size))
    if make is gif_declaring:
        assert len(path.read_bytes()) == 29
    with pytest.raises(ImageError, match="bomb"):
        preprocess.read_image(path)
    with pytest.raises(ImageError, match="bomb"):
        preprocess.load_rgb(path)


def test_pixel_limit_message_and_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(13000, 13000))
    with pytest.raises(ImageError, match="169000000 pixels, more than the limit of 50000000 "
                                         "\\(set CAFFELRP_MAX_IMAGE_PIXELS"):
        preprocess.read_image(path)
    monkeypatch.setenv("CAFFELRP_MAX_IMAGE_PIXELS", "1000")
    small = make_image(tmp_path / "small.png", size=(40, 30))
    with pytest.raises(ImageError, match="1200 pixels, more than the limit of 1000"):
        preprocess.read_image(small)
    monkeypatch.setenv("CAFFELRP_MAX_IMAGE_PIXELS", "1200")
    assert preprocess.read_image(small).rgb.shape == (30, 40, 3)
    monkeypatch.setenv("CAFFELRP_MAX_IMAGE_PIXELS", "abc")
    with pytest.raises(imageio.limits.UsageError, match="CAFFELRP_MAX_IMAGE_PIXELS"):
        preprocess.read_image(small)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        preprocess.read_image(fifo)


def test_corrupt_tiff_is_an_image_error(tmp_path):
    # a TIFF whose strip offsets and sizes point anywhere: Pillow raises assorted exception
    # types; each mutation must come out as ImageError (or decode), never anything else
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)).save(
        buf, format="TIFF")
    data = bytearray(buf.getvalue())
    rng = np.random.default_rng(1)
    path = tmp_path / "c.tif"
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            mutated[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(mutated))
        try:
            preprocess.read_image(path)
        except ImageError:
            pass


def test_bombs_and_corrupt_files_do_not_stop_the_batch(tmp_path, model, capsys):  # noqa: F811
    (tmp_path / "bomb.png").write_bytes(png_declaring(30000, 30000))
    (tmp_path / "tiny.gif").write_bytes(gif_declaring(65535, 65535))
    (tmp_path / "cut.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\xff\xff")
    good = make_image(tmp_path / "good.png")
    out = tmp_path / "out"
    code = explain(model, tmp_path / "bomb.png", tmp_path / "tiny.gif", tmp_path / "cut.tif",
                   good, out=out)
    assert code == cli.DATA_ERROR
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 3 and all(name in " ".join(err) for name in ("bomb", "tiny", "cut"))
    assert (out / "good.json").is_file()
