"""Gallery sizes: large images are scaled down to ``--size``, tiny ones enlarged to it."""

from pipeline.preview.images import ENLARGE_BELOW, fit


def test_large_images_only_shrink():
    assert fit((512, 512), 256) == (256, 256)
    assert fit((200, 100), 256) == (200, 100)
    assert fit((1024, 256), 256) == (256, 64)


def test_tiny_images_are_enlarged_to_the_gallery_size():
    assert fit((32, 32), 256) == (256, 256)
    assert fit((64, 32), 256) == (256, 128)
    assert fit((ENLARGE_BELOW - 1, 10), ENLARGE_BELOW * 2)[0] == ENLARGE_BELOW * 2
