"""Number lists, maps and number normalization (ascrm.core.rules.lists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ascrm.core.rules.lists import (
    ListError,
    NumberList,
    inline_map,
    load_list_file,
    load_map_file,
    normalize_ru,
    number_list,
)
from ascrm.errors import AscrmError

BOM = "\ufeff"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+7 (916) 123-45-67", "79161234567"),
        ("+79161234567", "79161234567"),
        ("89161234567", "79161234567"),
        ("8 916 123 45 67", "79161234567"),
        ("79161234567", "79161234567"),
        ("7-916-123-45-67", "79161234567"),
        ("9161234567", "79161234567"),
        ("(916) 123.45.67", "79161234567"),
        ("  8 (495) 123-45-67 ", "74951234567"),
        ("1001", "1001"),
        ("441234567890", "441234567890"),
        ("+44 20 1234 5678", "442012345678"),
        ("+8612345678901", "8612345678901"),
        ("123", "123"),
        ("", ""),
        ("anonymous", "anonymous"),
        ("916-ABC-4567", "916ABC4567"),
        ("８９１６１２３４５６７", "８９１６１２３４５６７"),  # fullwidth digits: not ASCII, left alone
    ],
)
def test_normalize_ru(number: str, expected: str) -> None:
    assert normalize_ru(number) == expected


def test_normalize_ru_is_idempotent() -> None:
    for number in ("+7 (916) 123-45-67", "89161234567", "9161234567", "1001", "441234567890"):
        assert normalize_ru(normalize_ru(number)) == normalize_ru(number)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("79161234567", True),
        ("79165551234", True),
        ("7916555", True),
        ("791655", False),
        ("79161234568", False),
        ("74951234567", True),
        ("7495", True),
        ("749", False),
        ("", False),
    ],
)
def test_number_list_exact_and_prefix(value: str, expected: bool) -> None:
    numbers = number_list(["79161234567", "7916555*", "7495*", " 79990000000 "])
    assert (value in numbers) is expected


def test_number_list_fields() -> None:
    numbers = number_list(["79161234567", "7916555*", "7495*", "7812*", "79161234567"])
    assert numbers == NumberList(
        exact=frozenset({"79161234567"}),
        prefixes=frozenset({"7916555", "7495", "7812"}),
        prefix_lengths=(4, 7),
    )
    assert len(numbers) == 4
    assert repr(numbers) == "NumberList(exact=1, prefixes=3)"
    with pytest.raises(AttributeError):
        numbers.exact = frozenset()  # type: ignore[misc]


def test_number_list_star_alone_is_everything() -> None:
    everything = number_list(["*"])
    assert everything.prefixes == frozenset({""})
    assert "79161234567" in everything
    assert "" in everything


def test_number_list_empty_matches_nothing() -> None:
    empty = number_list([])
    assert len(empty) == 0
    assert "79161234567" not in empty


def test_number_list_normalize() -> None:
    numbers = number_list(["+7 (916) 123-45-67", "8 495 000-00-00", "+7 (916) 555*", "*"], normalize_ru)
    assert numbers.exact == frozenset({"79161234567", "74950000000"})
    assert numbers.prefixes == frozenset({"7916555", ""})
    none_star = number_list(["8 (916) 555-*"], normalize_ru)
    assert none_star.prefixes == frozenset({"8916555"})  # a prefix is too short to be read as 8 -> 7


def test_number_list_takes_yaml_ints() -> None:
    assert number_list([79161234567, "7495*"]).exact == frozenset({"79161234567"})  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("entries", "normalize", "message"),
    [
        (["79161234567", ""], None, "entry 2: blank entry"),
        (["79161234567", "   "], None, "entry 2: blank entry"),
        (["79*16"], None, "entry 1: '79*16' has '*' inside: only a trailing '*' is a prefix"),
        (["7916*555*"], None, "entry 1: '7916*555*' has '*' inside: only a trailing '*' is a prefix"),
        (["**"], None, "entry 1: '**' has '*' inside: only a trailing '*' is a prefix"),
        (["1001", "--"], normalize_ru, "entry 2: '--' is not a number"),
        (["1001", "()*"], normalize_ru, "entry 2: '()*' is not a number prefix"),
        (["1001", None], None, "entry 2: blank entry"),
        (["1001", True], None, "entry 2: expected a number or text (quote it in YAML), got bool True"),
        ([1.5], None, "entry 1: expected a number or text (quote it in YAML), got float 1.5"),
    ],
)
def test_number_list_errors(entries: list[Any], normalize: Any, message: str) -> None:
    with pytest.raises(ListError) as info:
        number_list(entries, normalize)
    assert str(info.value) == message
    assert (info.value.path, info.value.line) == (None, None)


def test_number_list_refuses_a_string() -> None:
    with pytest.raises(ListError, match=r"^expected a list of entries, got the text '7916\*'$"):
        number_list("7916*")


def test_list_error_is_value_error_and_ascrm_error() -> None:
    exc = ListError(Path("lists/blocked.txt"), 12, "bad")
    assert isinstance(exc, ValueError)
    assert isinstance(exc, AscrmError)
    assert (exc.path, exc.line, exc.message) == (Path("lists/blocked.txt"), 12, "bad")
    assert str(exc) == "lists/blocked.txt:12: bad"
    assert str(ListError(Path("lists/blocked.txt"), None, "bad")) == "lists/blocked.txt: bad"
    assert str(ListError(None, None, "bad")) == "bad"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_load_list_file(tmp_path: Path) -> None:
    text = (
        BOM + "# blocked numbers\n"
        "\n"
        "79161234567\n"
        "  79162222222   # spam, reported 2026-11-01\n"
        "\t7916555*\n"
        "   \n"
        "   # indented comment\n"
        "7495*#no space before the comment\n"
        "*\n"
    )
    numbers = load_list_file(write(tmp_path, "blocked.txt", text))
    assert numbers.exact == frozenset({"79161234567", "79162222222"})
    assert numbers.prefixes == frozenset({"7916555", "7495", ""})
    assert numbers.prefix_lengths == (0, 4, 7)


def test_load_list_file_crlf_and_normalize(tmp_path: Path) -> None:
    path = write(tmp_path, "vip.txt", "+7 (916) 123-45-67\r\n8 916 000 00 00 # boss\r\n7 (812) *\r\n")
    numbers = load_list_file(path, normalize_ru)
    assert numbers.exact == frozenset({"79161234567", "79160000000"})
    assert numbers.prefixes == frozenset({"7812"})
    assert "78121234567" in numbers


def test_load_list_file_only_comments_is_empty(tmp_path: Path) -> None:
    assert len(load_list_file(write(tmp_path, "empty.txt", "# nothing yet\n\n"))) == 0


@pytest.mark.parametrize(
    ("text", "normalize", "line", "message"),
    [
        (
            "# header\n79161234567\n\n79*16\n",
            None,
            4,
            "'79*16' has '*' inside: only a trailing '*' is a prefix",
        ),
        (
            "1\n2\n3\n# x\n\n*5*  # comment\n",
            None,
            6,
            "'*5*' has '*' inside: only a trailing '*' is a prefix",
        ),
        ("79161234567\n ( ) # what\n", normalize_ru, 2, "'( )' is not a number"),
        ("79161234567\n\n-*\n", normalize_ru, 3, "'-*' is not a number prefix"),
    ],
)
def test_load_list_file_errors(tmp_path: Path, text: str, normalize: Any, line: int, message: str) -> None:
    path = write(tmp_path, "blocked.txt", text)
    with pytest.raises(ListError) as info:
        load_list_file(path, normalize)
    assert (info.value.path, info.value.line, info.value.message) == (path, line, message)
    assert str(info.value) == f"{path}:{line}: {message}"


@pytest.mark.parametrize("loader", [load_list_file, load_map_file])
def test_missing_file(tmp_path: Path, loader: Any) -> None:
    path = tmp_path / "lists" / "missing.txt"
    with pytest.raises(ListError) as info:
        loader(path)
    assert (info.value.path, info.value.line) == (path, None)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


@pytest.mark.parametrize("loader", [load_list_file, load_map_file])
def test_not_utf8(tmp_path: Path, loader: Any) -> None:
    path = write(tmp_path, "cp1251.txt", "79161234567,1001\n79162222222,Иванов\n", encoding="cp1251")
    with pytest.raises(ListError) as info:
        loader(path)
    assert info.value.line == 2
    assert "not UTF-8" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "AN,EXT\n79161234567,1001\n79162222222,1002\n",
        "number,manager\r\n79161234567,1001\r\n79162222222,1002\r\n",
        BOM + "AN,EXT\n79161234567,1001\n79162222222,1002\n",
        "79161234567,1001\n79162222222,1002\n",
        BOM + "79161234567,1001\n79162222222,1002",
        "# managers\n\nAN , EXT\n  79161234567 ,  1001\n# gone: 79163333333,1003\n\n79162222222,1002\n\n",
        '"AN","EXT"\n"79161234567","1001"\n"79162222222"," 1002 "\n',
        ",\n79161234567,1001\n , \n79162222222,1002\n",
    ],
)
def test_load_map_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "managers.csv", text)
    assert load_map_file(path) == {"79161234567": "1001", "79162222222": "1002"}


def test_load_map_file_quoted_values(tmp_path: Path) -> None:
    text = 'AN,manager\n79161234567,"Иванов, Иван"\n79162222222,"say ""hi"""\n7495*,"two\nlines"\n'
    assert load_map_file(write(tmp_path, "managers.csv", text)) == {
        "79161234567": "Иванов, Иван",
        "79162222222": 'say "hi"',
        "7495*": "two\nlines",
    }


def test_load_map_file_first_row_number_like_is_data(tmp_path: Path) -> None:
    text = "+7 (916) 123-45-67,1001\n"
    assert load_map_file(write(tmp_path, "m.csv", text)) == {"+7 (916) 123-45-67": "1001"}
    assert load_map_file(write(tmp_path, "m.csv", text), normalize_ru) == {"79161234567": "1001"}


def test_load_map_file_only_first_row_can_be_a_header(tmp_path: Path) -> None:
    text = "AN,EXT\nkey,value\n79161234567,1001\n"
    assert load_map_file(write(tmp_path, "m.csv", text)) == {"key": "value", "79161234567": "1001"}


def test_load_map_file_normalize_keys(tmp_path: Path) -> None:
    text = "AN,EXT\n8 (916) 123-45-67,1001\n+7 916 222-22-22,1002\n1001,operator\n"
    result = load_map_file(write(tmp_path, "m.csv", text), normalize_keys=normalize_ru)
    assert result == {"79161234567": "1001", "79162222222": "1002", "1001": "operator"}


@pytest.mark.parametrize(
    ("text", "normalize", "line", "message"),
    [
        ("AN,EXT\n79161234567,1001\n79162222222,1002,x\n", None, 3, "expected 2 columns (key,value), got 3"),
        ("79161234567,1001\n\n79162222222\n", None, 3, "expected 2 columns (key,value), got 1"),
        (
            "AN;EXT\n79161234567;1001\n",
            None,
            1,
            "expected 2 columns (key,value), got 1 (the file looks ';'-separated: use ',')",
        ),
        ("AN,EXT\n# c\n\n,1001\n", None, 4, "empty key (value '1001')"),
        ("AN,EXT\n79161234567,1001\n  ,  1002\n", None, 3, "empty key (value '1002')"),
        ("79161234567,1001\n79162222222,\n", None, 2, "empty value for key '79162222222'"),
        ('79161234567,1001\n79162222222," "\n', None, 2, "empty value for key '79162222222'"),
        ("AN,EXT\n", None, None, None),
        (
            "AN,EXT\n79161234567,1001\n79162222222,1002\n79161234567,1003\n",
            None,
            4,
            "duplicate key '79161234567' (first on line 2)",
        ),
        (
            "# c\nAN,EXT\n\n8 916 123-45-67,1001\n79162222222,1002\n+79161234567,1003\n",
            normalize_ru,
            6,
            "duplicate key '79161234567' (first on line 4)",
        ),
        (
            'AN,EXT\n79161234567,"open\n79162222222,1002\n',
            None,
            2,
            "bad CSV: unexpected end of data: a quoted value is not closed",
        ),
        ('AN,EXT\n79161234567,1001\n79162222222,"10"02\n', None, 3, "bad CSV: ',' expected after '\"'"),
        ("AN,EXT\n79161234567,1001\n--,1002\n", normalize_ru, 3, "key '--' is not a number"),
    ],
)
def test_load_map_file_errors(tmp_path: Path, text: str, normalize: Any, line: int | None, message: str | None) -> None:
    path = write(tmp_path, "managers.csv", text)
    if message is None:  # a header alone is an empty map, not an error
        assert load_map_file(path, normalize) == {}
        return
    with pytest.raises(ListError) as info:
        load_map_file(path, normalize)
    assert (info.value.path, info.value.line, info.value.message) == (path, line, message)
    assert str(info.value) == f"{path}:{line}: {message}"


def test_load_map_file_large(tmp_path: Path) -> None:
    rows = 100_000
    lines = ["AN,EXT"] + [f"7916{i:07d},{1000 + i % 1000}" for i in range(rows)]
    path = write(tmp_path, "managers.csv", "\n".join(lines) + "\n")
    managers = load_map_file(path)  # how long it takes is bench/lists_load.py's to measure
    assert len(managers) == rows
    assert managers["79160000000"] == "1000"
    assert managers["79160099999"] == "1999"
    assert managers.get("79160100000") is None
    assert all(managers[f"7916{i:07d}"] == str(1000 + i % 1000) for i in range(0, rows, 997))


def test_load_list_file_large(tmp_path: Path) -> None:
    rows = 100_000
    lines = [f"7495{i:07d}" for i in range(rows)] + ["7800*"]
    numbers = load_list_file(write(tmp_path, "blocked.txt", "\n".join(lines)))
    assert len(numbers) == rows + 1
    assert "74950099999" in numbers
    assert "78001234567" in numbers
    assert "74950100000" not in numbers


@pytest.mark.parametrize(
    ("mapping", "normalize", "expected"),
    [
        ({"7495": "msk", "7812": "spb"}, None, {"7495": "msk", "7812": "spb"}),
        ({79161234567: 1001, "79162222222": " 1002 "}, None, {"79161234567": "1001", "79162222222": "1002"}),
        ({"8 (916) 123-45-67": "ivanov"}, normalize_ru, {"79161234567": "ivanov"}),
        ({}, None, {}),
    ],
)
def test_inline_map(mapping: dict[Any, Any], normalize: Any, expected: dict[str, str]) -> None:
    assert inline_map(mapping, normalize) == expected


@pytest.mark.parametrize(
    ("mapping", "normalize", "message"),
    [
        ({None: "x"}, None, "empty key None (value 'x')"),
        ({"": "x"}, None, "empty key '' (value 'x')"),
        ({"7495": None}, None, "empty value for key '7495'"),
        ({7495: ""}, None, "empty value for key 7495"),
        ({"7495": "  "}, None, "empty value for key '7495'"),
        (
            {"7495": True},
            None,
            "value of key '7495': expected a number or text (quote it in YAML), got bool True",
        ),
        (
            {"7495": ["a"]},
            None,
            "value of key '7495': expected a number or text (quote it in YAML), got list ['a']",
        ),
        ({False: "x"}, None, "key False: expected a number or text (quote it in YAML), got bool False"),
        ({"--": "x"}, normalize_ru, "key '--' is not a number"),
        (
            {79161234567: "a", "8 916 123 45 67": "b"},
            normalize_ru,
            "duplicate key '79161234567' (written 79161234567 and '8 916 123 45 67')",
        ),
    ],
)
def test_inline_map_errors(mapping: dict[Any, Any], normalize: Any, message: str) -> None:
    with pytest.raises(ListError) as info:
        inline_map(mapping, normalize)
    assert (info.value.path, info.value.line, str(info.value)) == (None, None, message)
