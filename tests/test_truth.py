"""Reading the ground-truth CSV and matching its rows to images."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.fields import ProductFields
from inspector.truth import CellProblem, MalformedRow, TruthError, load_truth, parse_column_mapping

DATA = Path(__file__).parent / "data" / "truth"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# --------------------------------------------------------------------------------------------------------------
# Column mapping
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        (
            'brand=Brand,title="Product Name",price=Cost',
            {"brand": "Brand", "title": "Product Name", "price": "Cost"},
        ),
        ("title=\"Name, long\",category='Cat; egory'", {"title": "Name, long", "category": "Cat; egory"}),
        (" brand = Brand , price=Cost ", {"brand": "Brand", "price": "Cost"}),
        ("size:6.50=Price 6.5,size:xl=XL price", {"size:6.5": "Price 6.5", "size:XL": "XL price"}),
        ("image=file,key=sku,sizes=size_prices", {"path": "file", "key": "sku", "sizes": "size_prices"}),
        ("currency=Währung", {"currency": "Währung"}),
        ('title="Say ""hi"""', {"title": "Say hi"}),
    ],
)
def test_parse_column_mapping(text: str, mapping: dict[str, str]) -> None:
    assert parse_column_mapping(text) == mapping


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("brand", "FIELD=COLUMN"),
        ("brand=", "FIELD=COLUMN"),
        ("colour=Colour", "unknown field 'colour'"),
        ("brand=A,brand=B", "mapped twice"),
        ('title="Product Name', "quote"),
        ("size:=Col", "names no size"),
    ],
)
def test_parse_column_mapping_errors(text: str, message: str) -> None:
    with pytest.raises(TruthError, match=message):
        parse_column_mapping(text)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def test_original_burberry_columns_are_detected() -> None:
    table = load_truth(DATA / "burberry.csv")
    assert table.columns == {
        "path": "local_image_path",
        "key": "product_code",
        "title": "title",
        "brand": "brand",
        "category": "category3_code",
        "price": "full_price",  # the original fine-tune's "Full Price", not the sale price
        "currency": "currency_code",
    }
    assert [record.row_number for record in table.records] == [1, 2, 3]
    first, second, third = table.records
    assert first.fields == ProductFields(
        brand="BURBERRY",
        title="Vintage Check Cashmere Scarf",
        category="SCARVES",
        price=490.0,
        currency="USD",
    )
    assert first.key == "80564361" and first.image_ref == "images/80564361.jpg"
    assert second.fields.title == "Kensington Heritage Trench Coat, Long" and second.fields.price == 2290.0
    assert third.fields.price is None  # "n/a" is a missing value, not an unparseable one
    assert table.unparseable_cells == []


def test_common_column_names_any_case_and_spacing(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        " Image Path ,BRAND,Product Name,Category,Price ,SKU\nshoe.jpg,Nike,Dunk Low,Sneakers,$115.00,DD1503-101\n",
    )
    table = load_truth(path)
    assert table.columns == {
        "path": "Image Path",
        "key": "SKU",
        "title": "Product Name",
        "brand": "BRAND",
        "category": "Category",
        "price": "Price",
    }
    assert table.records[0].fields == ProductFields(
        brand="Nike", title="Dunk Low", category="Sneakers", price=115.0, currency="USD"
    )


def test_mapping_overrides_detection_and_semicolons_european_prices() -> None:
    mapping = parse_column_mapping(
        'path=Bild,brand=Marke,title=Produktname,category=Kategorie,price=Preis,currency="währung"'
    )
    table = load_truth(DATA / "shoes_semicolon.csv", mapping)
    assert table.columns["currency"] == "Währung" and table.columns["sizes"] == "sizes"
    nike, adidas = table.records
    assert nike.fields == ProductFields(
        brand="Nike",
        title="Dunk Low",
        category="Sneakers",
        price=1290.0,
        currency="EUR",  # from the € of the price, the currency cell being empty
        size_prices={"6.5": 115.0, "7.5": 120.0},
    )
    assert adidas.fields.price == 99.95 and adidas.fields.size_prices == {"8": 100.0}
    assert table.unparseable_cells == [CellProblem(2, "sizes", "9:oops", "not a size:price pair")]


def test_per_size_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "file,title,price_6.5,Size 7.5,8,price (9.5),Price XL,price_us_10,price_eur\n"
        'a.jpg,Dunk,$115,120.00,"1,125.50",,  ,130,99\n',
    )
    table = load_truth(path)
    sizes = {key: column for key, column in table.columns.items() if key.startswith("size:")}
    assert sizes == {
        "size:6.5": "price_6.5",
        "size:7.5": "Size 7.5",
        "size:8": "8",
        "size:9.5": "price (9.5)",
        "size:XL": "Price XL",
        "size:10": "price_us_10",
    }
    assert table.records[0].fields.size_prices == {"6.5": 115.0, "7.5": 120.0, "8": 1125.5, "10": 130.0}


def test_mapped_size_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,title,Small,Big\na.jpg,Tee,10,12\n")
    table = load_truth(path, parse_column_mapping("size:S=Small,size:L=Big"))
    assert table.records[0].fields.size_prices == {"S": 10.0, "L": 12.0}


def test_unparseable_cells_are_counted_not_fatal(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "file,title,price,currency,price_8\n"
        "a.jpg,A,cheap,USD,10\n"
        "b.jpg,B,12.50,dollars,ten\n"
        "c.jpg,C,13,Bitcoin,\n",
    )
    table = load_truth(path)
    assert [record.fields.price for record in table.records] == [None, 12.5, 13.0]
    assert [record.fields.currency for record in table.records] == ["USD", "USD", None]
    assert table.unparseable_cells == [
        CellProblem(1, "price", "cheap", "not a price"),
        CellProblem(2, "price_8", "ten", "not a price"),
        CellProblem(3, "currency", "Bitcoin", "not a currency (use an ISO 4217 code such as USD)"),
    ]


@pytest.mark.parametrize(
    ("price", "currency", "expected", "problem"),
    [
        # issue 8: each of these was misread silently (5.0, 1.0, 1.299, 1.299)
        ("-5.00", "", (None, None), "negative price"),
        ("1 299,00 kr", "", (1299.0, "SEK"), None),
        ("EUR 1.299", "", (1299.0, "EUR"), None),
        ("1.234 €", "", (1234.0, "EUR"), None),
        ("1.299,- €", "", (1299.0, "EUR"), None),
        # one separator before three digits: the currency column settles it, or the cell is left empty
        ("1,290", "USD", (1290.0, "USD"), None),
        ("1.299", "EUR", (1299.0, "EUR"), None),
        ("1,290", "", (None, None), "ambiguous price"),
        ("1.250", "KWD", (None, "KWD"), "ambiguous price"),
        ("1 299,00 kr", "NOK", (1299.0, "NOK"), None),  # "kr" is SEK unless the currency column says otherwise
        ("1.290,00", "", (1290.0, None), None),
        # exponent notation was read as its mantissa (5.0, 1.0): read exactly, or left empty and counted
        ("5e-5", "USD", (5e-05, "USD"), None),
        ("1.5E+3", "", (1500.0, None), None),
        ("1,290e3", "USD", (None, "USD"), "not a price"),
    ],
)
def test_price_cells_are_read_right_or_left_empty_and_counted(
    tmp_path: Path, price: str, currency: str, expected: tuple, problem: str | None
) -> None:
    path = write(tmp_path / "c.csv", f'file,price,currency,price_8\na.jpg,"{price}",{currency},"{price}"\n')
    table = load_truth(path)
    fields = table.records[0].fields
    assert (fields.price, fields.currency) == expected
    assert (fields.size_prices or {}) == ({} if expected[0] is None else {"8": expected[0]})
    problems = table.unparseable_cells
    if problem is None:
        assert problems == []
    else:
        assert [(p.column, p.value) for p in problems] == [("price", price), ("price_8", price)]
        assert all(p.problem.startswith(problem) for p in problems)


def test_currency_column_wins_over_price_symbol(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,price,currency\na.jpg,$40,CAD\nb.jpg,$40,\n")
    assert [record.fields.currency for record in load_truth(path).records] == ["CAD", "USD"]


def test_malformed_rows_are_skipped_and_keep_later_row_numbers(tmp_path: Path) -> None:
    """Too many cells (an unquoted comma) or too few: which value belongs to which column is unknown."""
    path = write(
        tmp_path / "c.csv", "file,title,price\na.jpg,A,1\nb.jpg,B,2,extra,fields\nc.jpg,C\n\nd.jpg,D,4\n"
    )
    table = load_truth(path)
    assert table.malformed_rows == [MalformedRow(2, 3, 3, 5, 3), MalformedRow(3, 4, 4, 2, 3)]
    assert [(r.row_number, r.fields.title, r.fields.price) for r in table.records] == [(1, "A", 1.0), (4, "D", 4.0)]


@pytest.mark.parametrize("bad_row", [1, 2, 5])
def test_an_unquoted_comma_in_any_row_never_moves_other_rows(tmp_path: Path, bad_row: int) -> None:
    """Issue 8: an extra cell in the first data row made pandas use the first column as the index, shifting the
    whole catalogue one column (0 of 36 images matched)."""
    lines = [f"item{i}.jpg,Title {i},{i}.50,USD" for i in range(1, 6)]
    lines[bad_row - 1] = f"item{bad_row}.jpg,Dunk Low, Retro,{bad_row}.50,USD"
    path = write(tmp_path / "c.csv", "file,title,price,currency\n" + "\n".join(lines) + "\n")
    table = load_truth(path)
    assert table.columns == {"path": "file", "title": "title", "price": "price", "currency": "currency"}
    assert table.malformed_rows == [MalformedRow(bad_row, bad_row + 1, bad_row + 1, 5, 4)]
    images = [tmp_path / f"item{i}.jpg" for i in range(1, 6)]
    match = table.match(images)
    assert match.unmatched_images == [tmp_path / f"item{bad_row}.jpg"]
    for i, image in enumerate(images, start=1):
        if i != bad_row:
            assert match.records[image].fields == ProductFields(title=f"Title {i}", price=i + 0.5, currency="USD")
            assert match.records[image].row_number == i
    assert match.summary()["malformed_rows"] == 1
    assert match.summary()["malformed_at_lines"] == [str(bad_row + 1)]


def test_a_quote_left_open_is_one_malformed_row_with_the_lines_it_swallowed(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", 'file,title\na.jpg,A\nb.jpg,"B\nc.jpg,C\nd.jpg,D\n')
    table = load_truth(path)
    assert [record.fields.title for record in table.records] == ["A"]
    assert table.malformed_rows == [MalformedRow(2, 3, 5, 2, 2)]
    assert table.malformed_rows[0].lines() == "3-5"


def test_quoted_cells_may_hold_separators_quotes_and_line_breaks(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", 'file,title,price\na.jpg,"Coat, ""Long""\nbeige",1\nb.jpg,B,2\n')
    table = load_truth(path)
    assert [record.fields.title for record in table.records] == ['Coat, "Long" beige', "B"]
    assert table.malformed_rows == []
    image = tmp_path / "b.jpg"
    assert table.match([image]).records[image].row_number == 2


def test_a_header_name_used_twice_reads_the_first_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,title,title\na.jpg,First,Second\n")
    assert load_truth(path).records[0].fields.title == "First"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252", "utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_encodings(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path / "c.csv", "file,brand,price\nx.jpg,Hermès,€5\n", encoding)
    table = load_truth(path)
    assert table.columns["path"] == "file"  # a BOM does not stick to the first column name
    assert table.records[0].fields == ProductFields(brand="Hermès", price=5.0, currency="EUR")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_rows_after_non_ascii_rows_are_read_from_the_right_place(tmp_path: Path, encoding: str, newline: str) -> None:
    rows = ["file,title,price", "crème.jpg,Crème brûlée,€5", 'b.jpg,"Naïve, ""quoted""",6', "ß.jpg,Straße,7", "c.jpg,C,8"]
    path = write(tmp_path / "c.csv", newline.join(rows) + newline, encoding)
    images = [tmp_path / name for name in ("c.jpg", "ß.jpg", "b.jpg", "crème.jpg")]
    match = load_truth(path).match(images)
    assert [match.records[image].fields.title for image in images] == ['C', "Straße", 'Naïve, "quoted"', "Crème brûlée"]
    assert [match.records[image].row_number for image in images] == [4, 3, 2, 1]


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
def test_excel_unicode_text_is_utf16_tab_separated(tmp_path: Path, bom: bytes) -> None:
    """Excel's "Unicode Text" export: UTF-16 with a byte-order mark, cells separated by tabs."""
    text = "Image\tBrand\tProduct Name\tPrice\r\nshoe.jpg\tCafé Noir\tDunk, Low\t1 299,00 kr\r\n"
    codec = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    path = tmp_path / "export.txt"
    path.write_bytes(bom + text.encode(codec))
    table = load_truth(path)
    assert table.column_names == ["Image", "Brand", "Product Name", "Price"]
    assert table.records[0].fields == ProductFields(brand="Café Noir", title="Dunk, Low", price=1299.0, currency="SEK")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xb5U", "not a text file.*CSV UTF-8"),
        ("file,title\na.jpg,\u041f\u0440\u0438\u0432\u0435\u0442\n".encode("koi8-r") + b"\x81\x8d", "neither UTF-8.*CSV UTF-8"),
        (b"\xef\xbb\xbffile,title\na.jpg,\xff\xfe\n", "UTF-8 byte-order mark but is not UTF-8"),
    ],
)
def test_undecodable_files_are_refused_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(data)
    with pytest.raises(TruthError, match=message) as error:
        load_truth(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ('"Image, file";"Price"\n"a.jpg";"1.299,00 €"\n', ["Image, file", "Price"]),  # a tie when counting
        ("file|title|price\na.jpg|A, B|1\n", ["file", "title", "price"]),
        ("file;title;price\na.jpg;A;1,5;extra\nb.jpg;B;2\n", ["file", "title", "price"]),  # malformed first row
        ("file,title,price\na.jpg,A;B,1\n", ["file", "title", "price"]),
        ("title\nA\n", ["title"]),
        ("sep=;\nfile;title, long;price\na.jpg;A, B;1\n", ["file", "title, long", "price"]),  # Excel's hint line
    ],
)
def test_delimiter_detection(tmp_path: Path, text: str, columns: list[str]) -> None:
    path = write(tmp_path / "c.csv", text)
    if len(columns) == 1:
        with pytest.raises(TruthError, match="names the image"):
            load_truth(path)
        return
    assert load_truth(path).column_names == columns


def test_missing_mapped_column_lists_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,Brand,Cost\na.jpg,Nike,1\n")
    with pytest.raises(TruthError) as error:
        load_truth(path, {"title": "Product Name"})
    message = str(error.value)
    assert "'Product Name'" in message and "'file', 'Brand', 'Cost'" in message


def test_missing_key_column_lists_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,Brand\na.jpg,Nike\n")
    with pytest.raises(TruthError, match="no key column 'sku'.*'file', 'Brand'"):
        load_truth(path, key_column="sku")


def test_no_product_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,colour\na.jpg,red\n")
    with pytest.raises(TruthError, match="no product columns.*'file', 'colour'.*--truth-columns"):
        load_truth(path)


def test_no_image_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "title,price\nA,1\n")
    with pytest.raises(TruthError, match="names the image.*--truth-key"):
        load_truth(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("", "empty"), ("\n\n", "empty"), ('""\n', "no header"), ("sep=;\n", "no header")],
)
def test_unreadable_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "c.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TruthError, match=message):
        load_truth(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(TruthError, match="folder"):
        load_truth(tmp_path)


def test_header_only(tmp_path: Path) -> None:
    table = load_truth(write(tmp_path / "c.csv", "file,title\n"))
    assert len(table) == 0
    match = table.match([tmp_path / "a.jpg"])
    assert match.unmatched_images == [tmp_path / "a.jpg"] and match.records == {}


def test_unknown_field_in_columns_argument(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "file,title\na.jpg,A\n")
    with pytest.raises(TruthError, match="colour"):
        load_truth(path, {"colour": "title"})


# --------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------


def test_match_by_path_relative_to_csv_and_to_root_and_absolute(tmp_path: Path) -> None:
    root = tmp_path / "scan"
    absolute = tmp_path / "elsewhere" / "abs.jpg"
    csv_path = write(
        tmp_path / "meta" / "c.csv",
        "path,title\n"
        "pics/a.jpg,next to the CSV\n"
        "shoes/b.jpg,under the scan root\n"
        f"{absolute},absolute\n"
        "pics\\windows.jpg,backslashes\n",
    )
    images = [
        tmp_path / "meta" / "pics" / "a.jpg",
        root / "shoes" / "b.jpg",
        absolute,
        tmp_path / "meta" / "pics" / "windows.jpg",
    ]
    match = load_truth(csv_path).match(images, [root])
    assert [match.records[image].fields.title for image in images] == [
        "next to the CSV",
        "under the scan root",
        "absolute",
        "backslashes",
    ]
    assert all(method == "path" for method in match.matched_by.values())
    assert match.records[images[0]].key == "pics/a.jpg"


def test_path_match_wins_over_name_and_folders_break_name_ties(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "c.csv", "file,title\nred/shoe.jpg,Red\nblue/shoe.jpg,Blue\n")
    table = load_truth(csv_path)
    exact = [tmp_path / "blue" / "shoe.jpg"]
    assert table.match(exact).records[exact[0]].fields.title == "Blue"
    moved = [Path("/somewhere/else/red/shoe.jpg"), Path("/other/blue/shoe.jpg"), Path("/x/shoe.jpg")]
    match = table.match(moved)
    assert [match.records[image].fields.title for image in moved] == ["Red", "Blue", "Red"]
    assert set(match.matched_by.values()) == {"name"}


def test_match_by_name_and_stem_ignoring_case(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "c.csv",
        "image,title\nhttps://cdn.example.com/img/Shoe%201.JPG?w=200,url\nbag,stem only\nhat.png,other extension\n",
    )
    images = [Path("/data/shoe 1.jpg"), Path("/data/BAG.webp"), Path("/data/hat.jpg")]
    match = load_truth(csv_path).match(images)
    assert [match.records[image].fields.title for image in images] == ["url", "stem only", "other extension"]
    assert [match.matched_by[image] for image in images] == ["name", "stem", "stem"]


def test_stem_with_a_dot_matches_the_file_named_after_it(tmp_path: Path) -> None:
    """A path cell without extension may itself contain a dot ("nike.dunk" for nike.dunk.jpg)."""
    csv_path = write(tmp_path / "c.csv", "image,title\nnike.dunk,dotted stem\nDD1503.101,code\n")
    images = [Path("/data/nike.dunk.jpg"), Path("/data/dd1503.101.png")]
    match = load_truth(csv_path).match(images)
    assert [match.records.get(image) and match.records[image].fields.title for image in images] == [
        "dotted stem",
        "code",
    ]
    assert [match.matched_by[image] for image in images] == ["stem", "stem"]


def test_match_by_key_in_file_name_longest_key_wins(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "c.csv",
        "product_code,title\nDD1503-101,Dunk\n101,Short key\nDD1503,Prefix\nsku123,Letters and digits\n12,Twelve\n",
    )
    table = load_truth(csv_path, key_column="product_code")
    images = [
        Path("nike_DD1503-101_front.jpg"),
        Path("nike_dd1503-101_back.jpg"),
        Path("DD1503_side.png"),
        Path("x_101.jpg"),
        Path("product_123.jpg"),  # "12" would split the run of digits "123": no match
        Path("sku123.jpg"),
        Path("item-12-b.jpg"),
    ]
    match = table.match(images)
    titles = {image.name: record.fields.title for image, record in match.records.items()}
    assert titles == {
        "nike_DD1503-101_front.jpg": "Dunk",
        "nike_dd1503-101_back.jpg": "Dunk",
        "DD1503_side.png": "Prefix",
        "x_101.jpg": "Short key",
        "sku123.jpg": "Letters and digits",
        "item-12-b.jpg": "Twelve",
    }
    assert match.unmatched_images == [Path("product_123.jpg")]
    assert match.records[images[0]].key == "DD1503-101"
    assert {method for method in match.matched_by.values()} == {"key"}
    assert match.unmatched_rows == 0


def test_automatic_key_column_matches_whole_stems_only(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "c.csv", "sku,title\nDD1503-101,Dunk\n12,Twelve\n")
    images = [Path("DD1503-101.jpg"), Path("nike_DD1503-101_front.jpg"), Path("12.png")]
    match = load_truth(csv_path).match(images)
    assert {image.name: record.fields.title for image, record in match.records.items()} == {
        "DD1503-101.jpg": "Dunk",
        "12.png": "Twelve",
    }
    assert match.records[images[0]].key == "DD1503-101"


def test_key_from_mapping_is_explicit(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "c.csv", "code,title\nDD1503-101,Dunk\n")
    image = Path("nike_DD1503-101_front.jpg")
    assert load_truth(csv_path, {"key": "code"}).match([image]).records[image].fields.title == "Dunk"
    with pytest.raises(TruthError, match="Two key columns"):
        load_truth(csv_path, {"key": "code"}, key_column="title")


def test_match_report_counts_everything(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "c.csv",
        "file,title,price\na.jpg,A,1\nb.jpg,B,oops\na.jpg,A again,3\nnever.jpg,N,4\n,no image,5\n",
    )
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "unknown.jpg"]
    match = load_truth(csv_path).match(images, [tmp_path])
    assert match.records[images[0]].fields.title == "A"  # the first of duplicate rows is used
    assert match.records[images[0]].row_number == 1
    assert match.unmatched_images == [tmp_path / "unknown.jpg"]
    assert match.unmatched_rows == 3
    assert match.duplicate_keys == {"a.jpg": [1, 3]}
    assert match.unparseable_cells == [CellProblem(2, "price", "oops", "not a price")]
    assert match.summary() == {
        "rows": 5,
        "images": 3,
        "matched_images": 2,
        "unmatched_images": 1,
        "unmatched_rows": 3,
        "duplicate_keys": 1,
        "unparseable_cells": 1,
        "malformed_rows": 0,
        "matched_by": {"path": 2, "name": 0, "stem": 0, "key": 0},
    }


def test_rows_sharing_a_file_name_are_told_apart_by_folder_and_only_true_copies_are_duplicates(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "c.csv",
        "file,sku,title\nnike/1/front.jpg,1,One\nnike/2/front.jpg,2,Two\nNIKE/1/Front.jpg,3,Copy\nnike/2/front.png,4,Png\n",
    )
    images = [tmp_path / "nike" / "2" / "front.jpg", Path("/elsewhere/1/front.jpg")]
    match = load_truth(csv_path).match(images)
    assert [match.records[image].fields.title for image in images] == ["Two", "One"]
    assert [match.matched_by[image] for image in images] == ["path", "name"]
    assert match.duplicate_keys == {"nike/1/front.jpg": [1, 3]}


def test_records_are_keyed_by_the_path_objects_given(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "c.csv", "file,title\na.jpg,A\n")
    relative = Path("a.jpg")
    match = load_truth(csv_path).match([relative], [tmp_path])
    assert list(match.records) == [relative]
    assert match.records[relative] is not load_truth(csv_path).records[0]


def test_symlinked_image_matches_its_target_path(tmp_path: Path) -> None:
    target = tmp_path / "real" / "a.jpg"
    target.parent.mkdir()
    target.write_bytes(b"x")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    csv_path = write(tmp_path / "c.csv", "file,title\nreal/a.jpg,A\n")
    match = load_truth(csv_path).match([link])
    assert match.matched_by == {link: "path"}


def test_many_images_and_keys_match_quickly(tmp_path: Path) -> None:
    import time

    rows = "\n".join(f"SKU{index:05d}-X,Item {index}" for index in range(5000))
    csv_path = write(tmp_path / "c.csv", "sku,title\n" + rows + "\n")
    table = load_truth(csv_path, key_column="sku")
    images = [Path(f"/shop/brand_sku{index:05d}-x_front_{index % 3}.jpg") for index in range(5000)]
    start = time.perf_counter()
    match = table.match(images)
    assert time.perf_counter() - start < 10
    assert len(match.records) == 5000
    assert match.records[images[1234]].fields.title == "Item 1234"


def test_numbers_no_float_holds_in_catalogue_cells_are_unparseable_cells_not_a_crash(tmp_path: Path) -> None:
    """A JSON size table with a 309+ digit price raised OverflowError while the catalogue was read."""
    huge = "9" * 400
    path = write(tmp_path / "c.csv", f'file,title,price,sizes\na.jpg,A,{huge},"{{""6.5"": {huge}, ""7"": 5}}"\n')
    table = load_truth(path)
    assert (table.records[0].fields.price, table.records[0].fields.size_prices) == (None, {"7": 5.0})
    assert table.unparseable_cells == [
        CellProblem(1, "price", huge, "not a price"),
        CellProblem(1, "sizes", f"6.5: {huge}", "not a size:price pair"),
    ]


def test_a_field_several_columns_could_be_is_warned_about(tmp_path: Path) -> None:
    """Issue 20.2: 'colour' and 'Colour' (or 'color') both matched the colour field, silently."""
    from inspector.fields import load_fields

    fields = tmp_path / "fields.toml"
    fields.write_text('[fields.colour]\nkind = "category"\nsynonyms = ["color"]\n', encoding="utf-8")
    csv_path = tmp_path / "catalogue.csv"
    csv_path.write_text("file,price,colour,Colour,color\na.jpg,10,Navy,Red,Blue\n", encoding="utf-8")
    table = load_truth(csv_path, fieldset=load_fields(fields))
    assert table.columns["colour"] == "colour"
    assert table.warnings == [
        "3 catalogue columns look like colour ('colour', 'Colour', 'color'); using 'colour'. "
        'Choose one with --truth-columns colour="COLUMN"'
    ]
    chosen = load_truth(csv_path, {"colour": "color"}, fieldset=load_fields(fields))
    assert chosen.columns["colour"] == "color" and chosen.warnings == []
    sample = load_truth(Path(__file__).parent.parent / "sample_images" / "truth.csv")
    assert sample.warnings == []
