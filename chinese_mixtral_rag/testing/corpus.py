"""A small original zh/en text used to train the tiny test tokenizer.

The text only has to give SentencePiece enough characters and merges to fill a vocabulary of
about a thousand pieces, with the mix of scripts, digits and full-width punctuation that real
Chinese-Mixtral prompts contain. It was written for this package and carries no meaning beyond
that.
"""

from __future__ import annotations

__all__ = ["TRAINING_TEXT", "training_lines"]

TRAINING_TEXT = """\
早上七点，闹钟响了。小王从床上爬起来，先去厨房烧了一壶开水，又给自己煮了两个鸡蛋。
窗外下着小雨，楼下的早餐店已经排起了长队，有人买豆浆油条，也有人买包子和馄饨。
他看了看手机上的天气预报：今天最高气温十八度，最低十二度，傍晚雨会停。
出门之前，他把雨伞、钥匙、钱包和工作证都放进了背包，然后锁好门，走向地铁站。
地铁里人很多，大家低着头看手机、听音乐，或者闭着眼睛休息。
小王在第三站换乘二号线，再坐五站就到了公司附近。

周末的时候，一家人喜欢去公园散步。孩子们在草地上放风筝，老人们在树下下棋、打太极拳。
妈妈说：“今天的空气真好，我们中午就在湖边吃饭吧！”爸爸点点头，去超市买了面包、水果和饮料。
下午，他们参观了城市博物馆，看到了很多古代的瓷器、铜镜和书画。
回家的路上，孩子问：“为什么古人要在铜镜背面刻花纹？”爸爸想了想，说这既是装饰，也表达了对生活的美好祝愿。

做饭其实并不难。先把西红柿洗干净，切成小块；再把鸡蛋打散，加一点盐。
锅里放油，油热以后倒入蛋液，炒到半熟就盛出来。接着炒西红柿，炒出汤汁以后再把鸡蛋放回去，
最后撒上葱花，一盘西红柿炒鸡蛋就做好了。很多人第一次学做菜，都是从这道菜开始的。

近年来，人工智能技术发展得非常快。大语言模型可以回答问题、写文章、翻译外语，还能帮助程序员写代码。
不过，模型有时会编造并不存在的事实，这种现象常被称为“幻觉”。
为了减少幻觉，人们把模型和检索系统结合起来：先从文档库中找到相关的段落，再让模型根据这些段落回答问题，并注明出处。
这种方法叫做检索增强生成，英文缩写是RAG。它的效果取决于三个环节：文档切分是否合理，检索是否准确，提示词是否清楚。
对于中文文档来说，分词和编码尤其重要，因为很多旧文件使用GBK或Big5编码，而不是UTF-8。

计算机的内存和硬盘容量越来越大，但是在普通笔记本电脑上运行几十亿参数的模型仍然需要量化。
量化就是用更少的比特来存储权重，例如把十六位浮点数压缩成八位或四位整数。
量化以后，模型文件变小了，推理速度也更快，但准确率可能会略有下降。
混合专家模型把前馈网络分成多个专家，每个词元只激活其中两个，因此计算量比同样大小的稠密模型少得多。

法律是社会生活的基本规则。合同成立以后，双方都应当按照约定履行自己的义务。
如果一方违约，另一方可以要求继续履行、采取补救措施或者赔偿损失。
劳动者依法享有休息休假的权利，用人单位不得随意延长工作时间。
消费者购买的商品存在质量问题时，有权要求经营者修理、更换或者退货。
遇到纠纷，当事人可以先协商，协商不成的，可以申请调解、仲裁，或者向人民法院提起诉讼。
第一条　为了保护当事人的合法权益，规范市场秩序，制定本规定。
第二条　本规定所称的个人信息，是指以电子或者其他方式记录的与已识别或者可识别的自然人有关的各种信息。

中国有着悠久的历史。秦朝统一了文字、货币和度量衡，汉朝开通了通往西域的丝绸之路。
唐朝的长安是当时世界上最繁华的城市之一，来自各地的商人、僧侣和学者在这里交流。
宋朝的科技和商业十分发达，活字印刷术、指南针和火药都在这一时期得到了广泛应用。
明朝的郑和七次下西洋，船队最远到达了非洲东海岸。
历史告诉我们，开放和交流往往会带来繁荣，而封闭则容易导致落后。

春天，田野里开满了油菜花；夏天，孩子们在河边游泳、捉鱼；秋天，果园里的苹果和梨都熟了；
冬天，北方下起大雪，人们围着火炉喝热茶、聊家常。四季轮回，每个季节都有自己的味道。
读书也是一种享受。《红楼梦》《西游记》《水浒传》和《三国演义》被称为四大名著，很多人小时候就听过其中的故事。
老师常说：“读书破万卷，下笔如有神。”意思是读得多了，写文章自然就流畅了……

请问：明天上午九点的会议改到几点了？——改到下午两点半，在三楼的小会议室。
价格：一百二十元（含税）；数量：三十六件；合计：四千三百二十元。
电话号码是010-62345678，邮编100080，订单号为2024031500017。
她说：‘我已经把报告发给你了。’你收到了吗？收到了！谢谢！
注意：本系统支持中文、英文和数字混合输入；标点符号包括，。！？；：“”‘’（）《》、…

The weather was cold this morning, so I made a cup of tea before leaving the house.
Most people in the office arrived late because the trains were delayed by the snow.
A language model predicts the next token from the tokens that came before it.
Retrieval-augmented generation first searches a document store, then asks the model to answer
using only the passages it found, and to cite them with numbers like [1] and [2].
The contract shall remain in force for a period of three years from the date of signature.
Either party may terminate this agreement by giving thirty days' written notice to the other party.
In 1949, the city had about 2 million people; by 2020, the population had grown to 21.5 million.
Please send the report to the team before 5:30 p.m. on Friday, 12 March 2021.
The quick brown fox jumps over the lazy dog, while the small cat sleeps in the warm sun.
History is not only a list of dates and names;
it is the story of how people lived, worked and thought.
If you have any questions about installation,
read the README file or open an issue on the project page.
Version 3.14 of the library adds support for streaming, batching and better error messages.
Her phone number is +86 138 0013 8000, and her email address is wang.li@example.com.
She said, "Let's meet at the library at 10 o'clock." He replied, "OK, see you there!"
Learning a second language takes time: listen every day, read simple books, and speak without fear.
The recipe needs 200 g of flour, 3 eggs, 150 ml of milk and a pinch of salt.
Temperatures will range from -5 to 7 degrees Celsius, with strong winds in the afternoon.
What is the capital of France? Paris. What is 12 times 12? It is 144.

[INST] 你好，请用一句话介绍你自己。 [/INST]你好！我是一个可以回答中文和英文问题的助手。</s>
[INST] 根据下面的资料回答问题，并注明出处。资料[1]：合同期限为三年。
问题：合同期限是多久？ [/INST]合同期限为三年[1]。</s>
[INST] What does RAG stand for? [/INST]RAG stands for retrieval-augmented generation.</s>
[INST] 把“今天天气很好”翻译成英文。 [/INST]The weather is very nice today.</s>

夜深了，城市的灯光一盏一盏地熄灭。小王关上电脑，给明天的自己写了一张便条：
“一、九点前交报告；二、下午去银行办理业务；三、晚上给父母打电话。”
他把便条贴在冰箱上，洗漱完毕，很快就睡着了。
"""


def training_lines() -> list[str]:
    """Non-empty lines of :data:`TRAINING_TEXT`, the unit SentencePiece trains on."""
    return [line for line in TRAINING_TEXT.splitlines() if line.strip()]
