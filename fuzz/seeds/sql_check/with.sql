WITH 1 AS x SELECT x, 'a;b' FROM system.one -- comment
;