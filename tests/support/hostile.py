"""Hostile inputs generated on the spot: PDFs whose drawing never ends or explodes, and more.

Each is small (bytes to kilobytes) and costs a decoder without limit unless it is isolated;
written by hand so a test makes hundreds in milliseconds.
"""

from __future__ import annotations

from tests.support.corpus import _pdf


def _stream(content: bytes, dictionary: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(content), content)


def _form(content: bytes, resources: bytes) -> bytes:
    return _stream(
        content, b"/Type /XObject /Subtype /Form /BBox [0 0 200 200] /Resources " + resources
    )


def pdf_self_referencing_form() -> bytes:
    """One page drawing a Form XObject whose resources point back at itself (``/F0 Do`` twice
    inside ``/F0``): about 650 bytes that grew a worker to 19 GB in PDFium; in a decoder child
    PDFium aborts at the address-space limit instead."""
    resources = b"<< /XObject << /F0 5 0 R >> >>"
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources "
            + resources
            + b" /Contents 4 0 R >>",
            _stream(b"/F0 Do"),
            _form(b"/F0 Do /F0 Do", resources),
        ]
    )


def pdf_nested_forms(depth: int = 7, draws: int = 10, pages: int = 1) -> bytes:
    """Forms nested ``depth`` deep, each drawing the next ``draws`` times: ``draws ** depth``
    strokes per page from about 2 KB (7 deep x 10 took 679 s to render in process)."""
    first_form = 4 + pages
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    top = b"<< /XObject << /F1 %d 0 R >> >>" % first_form
    content_ref = 3 + pages
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources "
        + top
        + b" /Contents %d 0 R >>" % content_ref
    ] * pages
    objects.append(_stream(b"/F1 Do"))
    for level in range(1, depth + 1):
        if level == depth:
            objects.append(_form(b"0 0 m 200 200 l 200 0 l h f", b"<< >>"))
            continue
        child = b"<< /XObject << /F%d %d 0 R >> >>" % (level + 1, first_form + level)
        draw = b"".join(
            b"q 0.9 0 0 0.9 %d %d cm /F%d Do Q " % (i, i, level + 1) for i in range(draws)
        )
        objects.append(_form(draw, child))
    return _pdf(objects)


def pdf_vector_pages(pages: int, strokes: int = 2000) -> bytes:
    """``pages`` pages of ``strokes`` line segments each: slow to render, tiny to send."""
    content = b" ".join(
        b"%d %d m %d %d l S" % (i % 200, 0, 200 - i % 200, 200) for i in range(strokes)
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    contents = 3 + pages
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents %d 0 R >>" % contents
    ] * pages
    objects.append(_stream(content))
    return _pdf(objects)
