"""Write examples/docs/公司差旅报销制度.docx, the Word sample of the example documents.

Run once from the repository root: ``.venv/bin/python examples/make_docx.py``. The company and
its rules are fictional, written for this project. The output is byte-for-byte reproducible:
the core properties carry a fixed date and the zip entries a fixed timestamp.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import docx
from docx.enum.text import WD_ALIGN_PARAGRAPH

OUTPUT = Path(__file__).resolve().parent / "docs" / "公司差旅报销制度.docx"
FIXED = dt.datetime(2024, 3, 1, 9, 0, 0)

TITLE = "青禾数据科技有限公司差旅费用报销制度"
INTRO = (
    "（2024年3月1日起施行，编号 QH-CW-2024-07，由财务部负责解释。本文为示例文档，"
    "公司名称、人员和金额均为虚构。）"
)

# (chapter heading, [(article heading or None, [paragraphs])])
CHAPTERS: list[tuple[str, list[tuple[str | None, list[str]]]]] = [
    (
        "第一章 总则",
        [
            (
                "第一条 目的",
                [
                    "为规范员工因公出差的费用开支，做到标准清楚、手续简便、报销及时，"
                    "结合公司实际情况，制定本制度。",
                ],
            ),
            (
                "第二条 适用范围",
                [
                    "本制度适用于公司全体正式员工、试用期员工和实习生。外部顾问因公司业务"
                    "出差的，参照本制度执行，费用由邀请部门承担。",
                ],
            ),
            (
                "第三条 出差的定义",
                [
                    "出差是指员工经批准离开常驻工作城市，到外地办理公司业务。在常驻城市内"
                    "往返客户现场不属于出差，只报销市内交通费。",
                ],
            ),
        ],
    ),
    (
        "第二章 出差申请与审批流程",
        [
            (
                "第四条 事前申请",
                [
                    "员工出差前须在 OA 系统提交《出差申请单》，写明出差事由、目的地、起止日期"
                    "和费用预算。未经事前审批的出差，相关费用原则上不予报销。",
                    "紧急情况下可先电话或消息请示直属上级，并在返回后 2 个工作日内补办申请。",
                ],
            ),
            (
                "第五条 审批权限",
                [
                    "出差天数在 3 天以内（含 3 天）的，由部门经理审批；超过 3 天的，"
                    "还须分管副总经理审批；出国（境）出差一律由总经理审批。",
                    "单次出差预算超过 20000 元的，无论天数多少，均须财务总监会签。",
                ],
            ),
        ],
    ),
    (
        "第三章 交通费标准",
        [
            (
                "第六条 城际交通",
                [
                    "员工城际出行优先乘坐高铁或动车二等座。单程 6 小时以上的夜间行程"
                    "可乘坐火车软卧。",
                    "乘坐飞机一般为经济舱，须提前 7 天以上订票以取得折扣；部门总监及以上"
                    "职级人员单程飞行超过 4 小时的，可乘坐公务舱。",
                ],
            ),
            (
                "第七条 市内交通",
                [
                    "出差期间的市内交通实行定额包干，每人每天 80 元，不再另行凭票报销出租车费。"
                    "往返机场或火车站的出租车费用可凭发票实报实销。",
                ],
            ),
        ],
    ),
    (
        "第四章 住宿标准",
        [
            (
                "第八条 按城市等级确定住宿标准",
                [
                    "住宿费按出差城市等级和员工职级在下表限额内凭发票实报实销，"
                    "金额为每人每晚的上限：",
                ],
            ),
            (
                "第九条 超标与合住",
                [
                    "超出标准的部分由员工本人承担。两名同性别员工同行的，原则上合住一间标准间，"
                    "合住时住宿限额按单人标准的 1.5 倍计算。",
                    "住在亲友家中、未产生住宿费的，每晚给予 100 元住宿补贴。",
                ],
            ),
        ],
    ),
    (
        "第五章 伙食补助",
        [
            (
                "第十条 伙食补助标准",
                [
                    "伙食补助按自然日计算，一线城市每人每天 120 元，其他城市每人每天 100 元，"
                    "无需提供餐饮发票。接待方已安排用餐的，按每餐 40 元扣减。",
                ],
            ),
        ],
    ),
    (
        "第六章 报销时限与材料",
        [
            (
                "第十一条 报销时限",
                [
                    "员工应在出差结束后 30 天内提交报销申请。超过 30 天但不满 90 天的，"
                    "须写明逾期原因并经部门经理签字；超过 90 天的，财务部不再受理。",
                ],
            ),
            (
                "第十二条 报销材料",
                [
                    "报销时须提供：已审批的出差申请单、交通票据（电子客票行程单或火车票）、"
                    "住宿发票及酒店水单。发票抬头须为公司全称，并填写统一社会信用代码。",
                ],
            ),
            (
                "第十三条 审核与付款",
                [
                    "报销单按“直属上级审核、财务部复核、出纳付款”的顺序办理。"
                    "财务部收到完整材料后 5 个工作日内完成审核，审核通过的款项"
                    "在每周四统一转入员工工资卡。",
                ],
            ),
            (
                "第十四条 借款",
                [
                    "预计费用超过 5000 元的出差，可申请差旅借款，借款须在出差结束后"
                    "30 天内随报销一并冲账。",
                ],
            ),
        ],
    ),
    (
        "第七章 附则",
        [
            (
                "第十五条 违规处理",
                [
                    "虚开、伪造票据或重复报销的，除追回款项外，视情节给予警告直至解除劳动合同。",
                ],
            ),
            (
                "第十六条 施行日期",
                [
                    "本制度自 2024 年 3 月 1 日起施行，原《差旅管理暂行办法》同时废止。",
                ],
            ),
        ],
    ),
]

LODGING = [
    ("城市等级", "示例城市", "普通员工", "经理及以上"),
    ("一线城市", "北京、上海、广州、深圳", "550 元", "750 元"),
    ("二线城市", "杭州、南京、成都、武汉等省会城市", "450 元", "600 元"),
    ("其他城市", "地级市及县城", "350 元", "480 元"),
]


def build() -> docx.document.Document:
    document = docx.Document()
    title = document.add_heading(TITLE, level=0)
    title.alignment = WD_ALIGN_PARAGRAPH.CENTER
    document.add_paragraph(INTRO)
    for chapter, articles in CHAPTERS:
        document.add_heading(chapter, level=1)
        for heading, paragraphs in articles:
            if heading:
                document.add_heading(heading, level=2)
            for text in paragraphs:
                document.add_paragraph(text)
            if heading and heading.startswith("第八条"):
                table = document.add_table(rows=0, cols=len(LODGING[0]))
                table.style = "Table Grid"
                for row in LODGING:
                    cells = table.add_row().cells
                    for cell, value in zip(cells, row, strict=True):
                        cell.text = value
    props = document.core_properties
    props.title = TITLE
    props.author = "青禾数据科技有限公司财务部"
    props.last_modified_by = "青禾数据科技有限公司财务部"
    props.created = FIXED
    props.modified = FIXED
    props.revision = 1
    return document


def reproducible_zip(data: bytes) -> bytes:
    """The same package with every entry dated FIXED, so that the bytes never change."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=FIXED.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, source.read(item.filename))
    return out.getvalue()


def main() -> None:
    buffer = io.BytesIO()
    build().save(buffer)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(reproducible_zip(buffer.getvalue()))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
