from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("history", "k", "exclude_seen", "allow", "deny", "explain", "model", "history_times", "now", "user_id", "diversity", "diversity_by", "history_int_ids")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TIMES_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_BY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_INT_IDS_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude_seen: bool
    allow: _containers.RepeatedScalarFieldContainer[str]
    deny: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    model: str
    history_times: _containers.RepeatedScalarFieldContainer[int]
    now: int
    user_id: str
    diversity: float
    diversity_by: str
    history_int_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, history: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude_seen: _Optional[bool] = ..., allow: _Optional[_Iterable[str]] = ..., deny: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., model: _Optional[str] = ..., history_times: _Optional[_Iterable[int]] = ..., now: _Optional[int] = ..., user_id: _Optional[str] = ..., diversity: _Optional[float] = ..., diversity_by: _Optional[str] = ..., history_int_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Because(_message.Message):
    __slots__ = ("item_id", "weight")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    weight: float
    def __init__(self, item_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "because")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    title: str
    because: _containers.RepeatedCompositeFieldContainer[Because]
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., because: _Optional[_Iterable[_Union[Because, _Mapping]]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "unknown_history_items", "model", "model_step", "cold_start")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_HISTORY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_STEP_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    unknown_history_items: int
    model: str
    model_step: int
    cold_start: bool
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., unknown_history_items: _Optional[int] = ..., model: _Optional[str] = ..., model_step: _Optional[int] = ..., cold_start: _Optional[bool] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class RecommendResult(_message.Message):
    __slots__ = ("code", "error", "response")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    code: int
    error: str
    response: RecommendResponse
    def __init__(self, code: _Optional[int] = ..., error: _Optional[str] = ..., response: _Optional[_Union[RecommendResponse, _Mapping]] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecommendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecommendResult, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("history", "candidates", "history_times", "now", "user_id", "history_int_ids")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TIMES_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_INT_IDS_FIELD_NUMBER: _ClassVar[int]
    history: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedScalarFieldContainer[str]
    history_times: _containers.RepeatedScalarFieldContainer[int]
    now: int
    user_id: str
    history_int_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, history: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[str]] = ..., history_times: _Optional[_Iterable[int]] = ..., now: _Optional[int] = ..., user_id: _Optional[str] = ..., history_int_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("user_id", "items", "times")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    items: _containers.RepeatedScalarFieldContainer[str]
    times: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user_id: _Optional[str] = ..., items: _Optional[_Iterable[str]] = ..., times: _Optional[_Iterable[int]] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("history_length", "unknown_items")
    HISTORY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    history_length: int
    unknown_items: int
    def __init__(self, history_length: _Optional[int] = ..., unknown_items: _Optional[int] = ...) -> None: ...

class FeatureValues(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class NewItem(_message.Message):
    __slots__ = ("item_id", "title", "features")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureValues]
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureValues, _Mapping]]] = ...) -> None: ...

class AddItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[NewItem]
    def __init__(self, items: _Optional[_Iterable[_Union[NewItem, _Mapping]]] = ...) -> None: ...

class AddItemsResponse(_message.Message):
    __slots__ = ("added", "catalog_size", "slots_left", "unknown_values")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_LEFT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_VALUES_FIELD_NUMBER: _ClassVar[int]
    added: int
    catalog_size: int
    slots_left: int
    unknown_values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, added: _Optional[int] = ..., catalog_size: _Optional[int] = ..., slots_left: _Optional[int] = ..., unknown_values: _Optional[_Iterable[str]] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("items", "unknown_history_items", "unknown_candidates", "stage")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_HISTORY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    unknown_history_items: int
    unknown_candidates: _containers.RepeatedScalarFieldContainer[str]
    stage: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., unknown_history_items: _Optional[int] = ..., unknown_candidates: _Optional[_Iterable[str]] = ..., stage: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "step", "catalog_size", "max_history_length", "batch_buckets", "length_buckets", "k_buckets", "checkpoint", "uses_time", "table_dtype", "table_bytes", "store", "store_max_events", "store_ttl_s", "diversity_pool", "item_features", "new_item_slots", "cold_items", "index")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BATCH_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    K_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    USES_TIME_FIELD_NUMBER: _ClassVar[int]
    TABLE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    TABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    STORE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_POOL_FIELD_NUMBER: _ClassVar[int]
    ITEM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEW_ITEM_SLOTS_FIELD_NUMBER: _ClassVar[int]
    COLD_ITEMS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: int
    catalog_size: int
    max_history_length: int
    batch_buckets: _containers.RepeatedScalarFieldContainer[int]
    length_buckets: _containers.RepeatedScalarFieldContainer[int]
    k_buckets: _containers.RepeatedScalarFieldContainer[int]
    checkpoint: str
    uses_time: bool
    table_dtype: str
    table_bytes: int
    store: str
    store_max_events: int
    store_ttl_s: int
    diversity_pool: int
    item_features: _containers.RepeatedScalarFieldContainer[str]
    new_item_slots: int
    cold_items: int
    index: str
    def __init__(self, name: _Optional[str] = ..., step: _Optional[int] = ..., catalog_size: _Optional[int] = ..., max_history_length: _Optional[int] = ..., batch_buckets: _Optional[_Iterable[int]] = ..., length_buckets: _Optional[_Iterable[int]] = ..., k_buckets: _Optional[_Iterable[int]] = ..., checkpoint: _Optional[str] = ..., uses_time: _Optional[bool] = ..., table_dtype: _Optional[str] = ..., table_bytes: _Optional[int] = ..., store: _Optional[str] = ..., store_max_events: _Optional[int] = ..., store_ttl_s: _Optional[int] = ..., diversity_pool: _Optional[int] = ..., item_features: _Optional[_Iterable[str]] = ..., new_item_slots: _Optional[int] = ..., cold_items: _Optional[int] = ..., index: _Optional[str] = ...) -> None: ...
