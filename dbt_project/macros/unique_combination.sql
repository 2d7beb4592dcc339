{% test unique_combination(model, columns) %}
{#- The grain test: no two rows share the key `columns`. -#}
select {{ columns | join(', ') }}, count(*) as rows_with_key
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
