"""The dashboard's words in English and Chinese; a page's language comes from ``?lang=``,
then the ``shelfwise_lang`` cookie, then ``Accept-Language``."""

from __future__ import annotations

from fastapi import Request

LANGUAGES = ("en", "zh")
COOKIE = "shelfwise_lang"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "shelfwise dashboard", "overview": "Overview", "shopper": "A shopper",
        "item": "An item", "search": "Search playground", "experiments": "Experiments",
        "promotions": "Promotions & exploration", "evaluation": "Offline evaluation",
        "numbers": "Numbers", "login": "Sign in", "logout": "Sign out",
        "admin_key": "Admin API key", "login_help": "The dashboard needs a key with the admin "
        "scope (`shelfwise keys create --scope admin`).",
        "catalog": "Items", "users": "Users", "events": "Events",
        "promotions_n": "Promotions", "events_per_minute": "Events per minute now",
        "events_over_time": "Events per day by type", "growth": "Catalog and users over time",
        "bundle": "Serving bundle", "version": "Version", "age": "Age", "config_hash":
        "Config hash", "trained_on": "Trained on", "offline_metrics": "Offline metrics",
        "latency": "Latency and errors by route", "route": "Route", "requests": "Requests",
        "errors": "5xx errors", "error_rate": "Error rate", "client_errors": "4xx",
        "p50": "p50 ms", "p95": "p95 ms", "no_metrics": "Monitoring is off "
        "([serve.monitoring] metrics = false).", "no_requests": "No API requests yet.",
        "day": "Day", "type": "Type", "count": "Count", "user_id": "User id",
        "show": "Show", "profile": "Profile", "interest_tags": "Interest tags",
        "interests": "Interest clusters", "history": "Recent history", "feed": "Feed",
        "diversity": "Diversity", "why": "Why", "score": "Score", "changed":
        "What changed after the last event", "entered": "Entered the feed", "left":
        "Left the feed", "no_change": "The last event did not change the top of the feed.",
        "no_history": "No history yet: a cold start.", "last_event": "Last event",
        "unknown_user": "Never seen: this is what a new visitor gets.", "title_col": "Title",
        "item_id": "Item id", "similar": "Similar items", "companions": "Bought with it "
        "(cart companions)", "item_activity": "Impressions, clicks and conversion over "
        "time", "impressions": "Impressions", "clicks": "Clicks", "carts": "Cart adds",
        "purchases": "Purchases", "ctr": "CTR", "conversion": "Conversion",
        "queries": "Where it ranks for its queries", "query": "Query", "rank": "Rank",
        "from_log": "searched", "from_title": "from its title", "not_in_top": "not in top 50",
        "category": "Category", "price": "Price", "query_placeholder": "a query, e.g. 耳机 "
        "or wireless mouse", "optional_user": "optional user id", "fused": "Fused order "
        "(lexical + semantic)", "personalized": "Personalized order", "moved": "Moved",
        "contributions": "What moved it", "need_user": "Give a user id to see the "
        "personalized order beside the fused one.", "variants": "Variants", "share":
        "Share", "overrides": "Overrides", "status": "Status", "start": "Start", "stop":
        "Stop", "verdict": "Verdict", "metric_over_time": "CTR over time per variant",
        "interval": "95% interval", "lift": "Lift vs control", "p_value": "p-value",
        "not_started": "Not started yet.", "no_experiments": "No experiments yet.",
        "create": "Create an experiment", "create_help": "The experiment as JSON, as for "
        "POST /v1/experiments.", "arms": "Arms", "chosen": "Chosen", "value": "Estimated "
        "value", "value_over_time": "Estimated value over time (mean reward, 95% interval)",
        "candidate": "Off-policy estimate of a candidate policy", "estimator": "Estimator",
        "logged_value": "Logged policy's mean reward", "evaluate": "Estimate",
        "no_decisions": "No logged decisions yet.", "exploration": "Feed exploration slots",
        "promotions_surface": "Promotions", "model": "Model", "dataset": "Dataset",
        "metric": "Metric", "accuracy_diversity": "Accuracy against diversity",
        "cold_slices": "Cold slices", "slice": "Slice", "no_results": "No offline results "
        "found. Run `shelfwise evaluate --out results.jsonl` and list the file under "
        "[serve.dashboard] results.", "sources": "Read from", "method": "Method", "knob":
        "Knob", "not_found": "Not found", "rules": "Rules", "window": "Active",
        "personalized_yes": "personalized", "cold_start": "cold start",
        "trained_rows": "trained on", "evaluated_rows": "replayed on", "policy": "Policy",
        "by_model": "by model", "ev_view": "view", "ev_click": "click", "ev_cart": "cart add",
        "ev_purchase": "purchase", "ev_search": "search",
    },
    "zh": {
        "title": "shelfwise 控制台", "overview": "总览", "shopper": "用户", "item": "商品",
        "search": "搜索试验场", "experiments": "实验", "promotions": "促销与探索",
        "evaluation": "离线评估", "numbers": "数据", "login": "登录", "logout": "退出",
        "admin_key": "管理员 API 密钥", "login_help": "控制台需要 admin 权限的密钥"
        "（`shelfwise keys create --scope admin`）。",
        "catalog": "商品数", "users": "用户数", "events": "事件数", "promotions_n": "促销数",
        "events_per_minute": "当前每分钟事件数", "events_over_time": "每日各类事件",
        "growth": "商品与用户增长", "bundle": "在线模型包", "version": "版本", "age": "已训练",
        "config_hash": "配置哈希", "trained_on": "训练数据", "offline_metrics": "离线指标",
        "latency": "各接口延迟与错误", "route": "接口", "requests": "请求数",
        "errors": "5xx 错误", "error_rate": "错误率", "client_errors": "4xx",
        "p50": "p50 毫秒", "p95": "p95 毫秒", "no_metrics": "监控已关闭"
        "（[serve.monitoring] metrics = false）。", "no_requests": "还没有 API 请求。",
        "day": "日期", "type": "类型", "count": "数量", "user_id": "用户 ID", "show": "查看",
        "profile": "用户画像", "interest_tags": "兴趣标签", "interests": "兴趣簇",
        "history": "最近行为", "feed": "推荐流", "diversity": "多样性", "why": "推荐理由",
        "score": "得分", "changed": "最近一次行为带来的变化", "entered": "新进入推荐流",
        "left": "移出推荐流", "no_change": "最近一次行为没有改变推荐流的前几位。",
        "no_history": "还没有行为：冷启动。", "last_event": "最近一次行为",
        "unknown_user": "从未见过的用户：这是新访客看到的内容。", "title_col": "标题",
        "item_id": "商品 ID", "similar": "相似商品", "companions": "常一起购买（购物车搭配）",
        "item_activity": "曝光、点击与转化趋势", "impressions": "曝光", "clicks": "点击",
        "carts": "加购", "purchases": "购买", "ctr": "点击率", "conversion": "转化率",
        "queries": "在热门查询中的排名", "query": "查询", "rank": "排名", "from_log": "用户搜索过",
        "from_title": "来自标题", "not_in_top": "不在前 50", "category": "类目", "price": "价格",
        "query_placeholder": "输入查询，例如 耳机 或 wireless mouse", "optional_user":
        "可选：用户 ID", "fused": "融合排序（词法 + 语义）", "personalized": "个性化排序",
        "moved": "位次变化", "contributions": "影响排序的特征", "need_user":
        "填写用户 ID 即可在融合排序旁看到个性化排序。", "variants": "实验组", "share": "流量",
        "overrides": "配置覆盖", "status": "状态", "start": "启动", "stop": "停止",
        "verdict": "结论", "metric_over_time": "各组点击率随时间变化", "interval":
        "95% 置信区间", "lift": "相对对照组提升", "p_value": "p 值", "not_started": "尚未启动。",
        "no_experiments": "还没有实验。", "create": "新建实验", "create_help":
        "以 JSON 描述实验，格式同 POST /v1/experiments。", "arms": "候选项", "chosen": "被选次数",
        "value": "估计价值", "value_over_time": "估计价值随时间变化（平均回报，95% 区间）",
        "candidate": "候选策略的离线（off-policy）估计", "estimator": "估计方法",
        "logged_value": "线上策略的平均回报", "evaluate": "估计", "no_decisions":
        "还没有记录的决策。", "exploration": "推荐流探索位", "promotions_surface": "促销",
        "model": "模型", "dataset": "数据集", "metric": "指标", "accuracy_diversity":
        "准确率与多样性的权衡", "cold_slices": "冷启动切片", "slice": "切片", "no_results":
        "没有找到离线评估结果。运行 `shelfwise evaluate --out results.jsonl`，并在 "
        "[serve.dashboard] results 中列出该文件。", "sources": "数据来源", "method": "方法",
        "knob": "旋钮", "not_found": "未找到", "rules": "规则", "window": "生效时间",
        "personalized_yes": "已个性化", "cold_start": "冷启动", "trained_rows": "训练行数",
        "evaluated_rows": "回放行数", "policy": "策略", "by_model": "按模型", "ev_view": "浏览",
        "ev_click": "点击", "ev_cart": "加购", "ev_purchase": "购买", "ev_search": "搜索",
    },
}


def language(request: Request) -> str:
    """``en`` or ``zh`` for this request."""
    asked = request.query_params.get("lang") or request.cookies.get(COOKIE)
    if asked in LANGUAGES:
        return asked
    accept = request.headers.get("accept-language", "")
    return "zh" if accept.strip().lower().startswith("zh") else "en"


def strings(lang: str) -> dict[str, str]:
    return STRINGS[lang if lang in STRINGS else "en"]
