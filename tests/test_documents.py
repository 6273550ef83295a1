"""Chunking follows headings, keeps heading paths, and never indexes markup or scripts."""

from indexer.documents import chunk_document, chunk_knowledge, markdown_sections
from tests.conftest import KNOWLEDGE


def test_markdown_heading_paths_are_kept():
    md = (
        "# Pricing\nIntro words about our pricing model here.\n\n## Day rates\n"
        "Senior consultants cost EUR 1,150 per day.\n\n### Discounts\nFive percent off.\n"
    )
    chunks = chunk_document("pricing.md", md)
    assert [c.heading for c in chunks] == [
        "Pricing",
        "Pricing > Day rates",
        "Pricing > Day rates > Discounts",
    ]
    assert all(c.title == "Pricing" and c.source == "pricing.md" for c in chunks)
    assert "1,150" in chunks[1].text


def test_headings_inside_code_fences_are_text():
    title, sections = markdown_sections("# T\n```\n# not a heading\n```\n")
    assert title == "T"
    assert len(sections) == 1 and "# not a heading" in sections[0].text


def test_markdown_tables_and_emphasis_become_plain_text():
    md = "# Rates\n| Role | Rate |\n| --- | --- |\n| Senior | **1,150** |\n"
    (chunk,) = chunk_document("rates.md", md)
    assert "Senior — 1,150." in chunk.text
    assert "|" not in chunk.text and "**" not in chunk.text and "---" not in chunk.text


def test_long_sections_are_split_with_overlap():
    words = [f"w{i}" for i in range(400)]
    chunks = chunk_document("long.md", "# Long\n" + " ".join(words), chunk_words=160, overlap=40)
    assert len(chunks) == 3
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert first[-40:] == second[:40]  # the overlap
    assert chunks[-1].text.split()[-1] == "w399"  # nothing lost at the end
    assert len({c.id for c in chunks}) == 3


def test_html_uses_a_real_parser_and_drops_scripts_styles_and_navigation():
    html = """<html><head><title>About Us</title><style>.a{content:"STYLE_X"}</style>
    <script>var s = "<h2>SCRIPT_X</h2>";</script></head>
    <body><nav>NAV_X</nav><main><h1>About Us</h1><p>Founded in 2013 in Rotterdam.</p>
    <h2>Team</h2><ul><li><p>Marta, CEO</p></li><li>Daniel, CTO</li></ul></main>
    <footer>FOOTER_X</footer></body></html>"""
    chunks = chunk_document("about.html", html)
    text = " ".join(c.heading + " " + c.text for c in chunks)
    for marker in ("STYLE_X", "SCRIPT_X", "NAV_X", "FOOTER_X"):
        assert marker not in text
    assert [c.heading for c in chunks] == ["About Us", "About Us > Team"]
    assert chunks[1].text.count("Marta") == 1  # a <p> inside an <li> is read once


def test_plain_text_title_is_its_first_line():
    (chunk,) = chunk_document("notice.txt", "Support Policy\n\nWe answer within two hours.")
    assert chunk.title == "Support Policy"


def test_sample_knowledge_base_is_substantial_and_clean():
    chunks, documents = chunk_knowledge(KNOWLEDGE)
    assert documents >= 10
    suffixes = {c.source.rsplit(".", 1)[1] for c in chunks}
    assert {"md", "html", "txt"} <= suffixes
    words = sum(len(p.read_text().split()) for p in KNOWLEDGE.iterdir())
    assert words >= 6000
    text = " ".join(c.text for c in chunks)
    assert "DO_NOT_INDEX" not in text  # the sentinels in about.html's script/style/nav
    assert len({c.id for c in chunks}) == len(chunks)


def test_markdown_front_matter_names_the_public_page_and_is_not_indexed():
    md = (
        "---\nurl: https://www.romega-solutions.com/pricing\nowner: sales\n---\n"
        "# Pricing\nSenior consultants cost EUR 1,150 per day.\n"
    )
    (chunk,) = chunk_document("pricing.md", md)
    assert chunk.url == "https://www.romega-solutions.com/pricing"
    assert chunk.metadata()["url"] == chunk.url
    assert chunk.title == "Pricing" and "owner" not in chunk.text


def test_html_canonical_link_names_the_public_page():
    html = (
        '<html><head><title>About</title><link rel="canonical" '
        'href="https://www.romega-solutions.com/about"></head>'
        "<body><main><h1>About</h1><p>We are a consultancy in Rotterdam.</p></main></body></html>"
    )
    (chunk,) = chunk_document("about.html", html)
    assert chunk.url == "https://www.romega-solutions.com/about"


def test_only_http_urls_are_kept_and_a_document_without_one_has_no_url_metadata():
    hostile = "---\nurl: javascript:alert(1)\n---\n# Pricing\nSenior consultants cost a lot.\n"
    (chunk,) = chunk_document("pricing.md", hostile)
    assert chunk.url == ""
    assert "url" not in chunk.metadata()  # the metadata of such a document is unchanged
