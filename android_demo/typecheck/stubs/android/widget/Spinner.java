package android.widget;
public class Spinner extends AdapterView<SpinnerAdapter> {
    public SpinnerAdapter getAdapter() { return null; }
    public void setAdapter(SpinnerAdapter adapter) {}
}
