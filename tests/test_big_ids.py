"""An id in a URL beyond 64 bits names nothing: 404, never an overflow in the database driver."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", [
    "/organize/petitions/9223372036854775808",
    "/api/v1/campaign/petitions/9223372036854775808",
    "/organize/petitions/99999999999999999999999999",
])
def test_ids_too_big_for_the_database_answer_404(app, client, path):
    assert client.get(path).status_code in (401, 404)


def test_the_largest_64_bit_id_still_reaches_the_view(app, client):
    # The view itself answers (a redirect to sign in, or 404 for a missing object): not the router.
    response = client.get("/organize/petitions/9223372036854775807")
    assert response.status_code in (302, 404)
    assert client.get("/organize/petitions/9223372036854775808").status_code == 404
